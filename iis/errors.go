package iis

import (
	"errors"
	"fmt"
	"strings"

	"github.com/segkcd/segkcd/winrs"
)

// Kinds of failure an *Error matches with errors.Is, beside the causes it
// wraps (*winrs.ScriptError, *winrs.Error).
var (
	// ErrInvalid: the request cannot be sent as it is (no virtual
	// directory, a name PowerShell cannot quote).
	ErrInvalid = errors.New("invalid request")
	// ErrUnexpectedOutput: a script's output did not parse.
	ErrUnexpectedOutput = errors.New("unexpected output")
	// ErrNotApplied: the settings still differ when read back after the
	// change (something else on the server set them back, or a lock in
	// applicationHost.config).
	ErrNotApplied = errors.New("settings still differ after the change")
)

// Error is an operation on one server that failed.
type Error struct {
	Op     string // "read authentication", "configure Windows authentication", "add group member", ...
	Server string // Server.Name; may be empty
	Object string // the location ("Default Web Site/EWS") or group
	Err    error
}

// Error says the operation, where, and the cause.
func (e *Error) Error() string {
	where := e.Object
	if e.Server != "" {
		where = e.Server + ": " + where
	}
	return fmt.Sprintf("iis: %s of %s: %v", e.Op, where, e.Err)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Hint is advice for the administrator, or "".
func (e *Error) Hint() string {
	var se *winrs.ScriptError
	var we *winrs.Error
	switch {
	case errors.Is(e.Err, ErrNotApplied):
		return "check whether the section is locked at the server level (overrideModeDefault in applicationHost.config) or reset by a group policy, then run again"
	case errors.As(e.Err, &se) && strings.Contains(se.Message, "WebAdministration"):
		return "install the IIS management scripts and tools (Web-Scripting-Tools) on the server"
	case errors.As(e.Err, &se) && strings.Contains(se.Message, "not found"):
		return "check the site and virtual directory names (Get-WebApplication lists them)"
	case errors.As(e.Err, &se):
		return "a configuration script failed part-way: run it again; it changes only what still differs"
	case errors.As(e.Err, &we):
		return we.Hint()
	}
	return ""
}

func (s *Server) fail(op, object string, err error) error {
	return &Error{Op: op, Server: s.Name, Object: object, Err: err}
}
