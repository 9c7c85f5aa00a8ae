package exchange

import (
	"errors"
	"fmt"
	"strings"

	"github.com/segkcd/segkcd/winrs"
)

// ErrInvalid is a request that cannot be sent as it is (a missing
// password, a user not written DOMAIN\NAME$, a value PowerShell cannot
// quote); errors.Is matches it.
var ErrInvalid = errors.New("invalid request")

// ErrUnexpectedOutput is a cmdlet's output that did not parse; errors.Is
// matches it.
var ErrUnexpectedOutput = errors.New("unexpected output")

// ErrNoCurrentCredential: no server holds the password AD has for the ASA
// now, so none can decrypt tickets for the mail SPNs; errors.Is matches
// it. Roll the password to recover.
var ErrNoCurrentCredential = errors.New("no server holds AD's current ASA password")

// Error is an operation on one server (or the organisation) that failed:
// its cause is a *winrs.ScriptError (the cmdlet ran and failed), a
// *winrs.Error (the server could not be reached or refused the logon),
// ErrInvalid or ErrUnexpectedOutput.
type Error struct {
	Op     string // "read version", "set ASA credential", "copy ASA credential from CAS1", ...
	Server string // one or several servers, comma-separated
	Err    error
}

// Error says the operation, the server and the cause.
func (e *Error) Error() string {
	if e.Server == "" {
		return fmt.Sprintf("exchange: %s: %v", e.Op, e.Err)
	}
	return fmt.Sprintf("exchange: %s on %s: %v", e.Op, e.Server, e.Err)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Hint is advice for the administrator, or "".
func (e *Error) Hint() string { return hint(e.Err) }

func hint(err error) string {
	var se *winrs.ScriptError
	var we *winrs.Error
	switch {
	case errors.As(err, &se) && strings.Contains(se.Message, "Microsoft.Exchange.Management.PowerShell.SnapIn"):
		return "the management shell host has no Exchange management tools: point Org.Shell at an Exchange server"
	case errors.As(err, &se) && strings.Contains(se.Message, "couldn't be found"):
		return "check the server name (Get-ExchangeServer lists them) and that the management account may read it"
	case errors.As(err, &se) && strings.Contains(strings.ToLower(se.Message), "access"):
		return "the WinRM account needs the Organization Management role (the roll script's requirement)"
	case errors.As(err, &we):
		return we.Hint()
	case errors.Is(err, ErrInvalid):
		return `give the ASA as DOMAIN\NAME$ and a password without line breaks`
	}
	return ""
}

func invalid(op, server, format string, a ...any) error {
	return &Error{Op: op, Server: server, Err: fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, a...)...)}
}

func unexpected(op, server, format string, a ...any) error {
	return &Error{Op: op, Server: server, Err: fmt.Errorf("%w: "+format, append([]any{ErrUnexpectedOutput}, a...)...)}
}
