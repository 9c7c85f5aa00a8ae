package winrs

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/segkcd/segkcd/internal/wsman"
	"github.com/segkcd/segkcd/kerberos"
)

// Sentinels that an *Error matches with errors.Is, so a caller can tell a
// refused logon from a host it cannot reach.
var (
	// ErrUnauthorized: the host refused the logon (HTTP 401), from a
	// wrong password or unknown user to a channel binding or SPN the host
	// does not accept.
	ErrUnauthorized = errors.New("winrs: logon refused")
	// ErrUnreachable: no answer from the host's WinRM listener (connection
	// refused or reset, name or route unknown, TLS handshake failed, time
	// out).
	ErrUnreachable = errors.New("winrs: host unreachable")
	// ErrEncryption wraps every failure to seal or unseal a message on plain
	// HTTP: a malformed body, a signature that does not verify, a reply in
	// clear to a sealed request, a host that will not seal.
	ErrEncryption = wsman.ErrEncryption
	// ErrUnquotable is a value Quote cannot make a PowerShell literal of.
	ErrUnquotable = wsman.ErrUnquotable
)

// Error is a failure to configure a client or to carry a script to the
// host and its output back; a script that ran and failed is a
// *ScriptError instead. It matches ErrUnauthorized or ErrUnreachable when
// that is the cause, and unwraps to the cause (a context's error, an
// *HTTPError, a *net.OpError).
type Error struct {
	Host string
	Op   string // configure, open shell, run
	Err  error
}

// Error says the operation, the host and the cause.
func (e *Error) Error() string {
	host := e.Host
	if host == "" {
		host = "(no host)"
	}
	return fmt.Sprintf("winrs: %s on %s: %v", e.Op, host, e.Err)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is matches ErrUnauthorized for a 401 reply and ErrUnreachable for a
// network failure, wherever in the chain they sit.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		var he *HTTPError
		return errors.As(e.Err, &he) && he.StatusCode == http.StatusUnauthorized
	case ErrUnreachable:
		var ke *kerberos.Error
		if errors.As(e.Err, &ke) {
			return false // the KDC, not the host, failed: the *kerberos.Error says how
		}
		var ne net.Error
		var oe *net.OpError
		var de *net.DNSError
		var ve *tls.CertificateVerificationError
		var re tls.RecordHeaderError
		return errors.As(e.Err, &oe) || errors.As(e.Err, &de) || errors.As(e.Err, &ve) || errors.As(e.Err, &re) ||
			(errors.As(e.Err, &ne) && ne.Timeout())
	}
	return false
}

// Hint is advice for the administrator, or "" when there is none.
func (e *Error) Hint() string {
	switch {
	case errors.Is(e, ErrUnauthorized):
		return "check the WinRM user and password (or the Kerberos SPN HTTP/<host>), that the listener allows this authentication (winrm get winrm/config/service/auth), and, on HTTPS with NTLM, the channel binding setting (CbtHardeningLevel)"
	case errors.Is(e, ErrUnreachable):
		return "check that WinRM listens on the host and port (winrm enumerate winrm/config/listener), that the firewall lets the gateway in, and, on HTTPS, that the host's certificate chains to the CA in the TLS config"
	case errors.Is(e, ErrEncryption):
		return "plain-HTTP WinRM seals every message: the host must allow Negotiate or Kerberos (not only Basic); or use HTTPS"
	}
	return ""
}

// HTTPError is a WinRM reply other than 200, with the SOAP fault's reason
// when there is one.
type HTTPError struct {
	StatusCode int
	Fault      string
}

// Error gives the status and the fault.
func (e *HTTPError) Error() string {
	if e.Fault == "" {
		return fmt.Sprintf("http error %d", e.StatusCode)
	}
	return fmt.Sprintf("http error %d: %s", e.StatusCode, e.Fault)
}

// ScriptError is a PowerShell script that ran on the host and failed: its
// exit code and the error text from its CLIXML stderr, with every secret
// passed to RunPowerShell replaced by [REDACTED].
type ScriptError struct {
	Host     string
	ExitCode int
	Message  string // the error records, readable
}

// Error gives the host, the exit code and the error text.
func (e *ScriptError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = "no error text"
	}
	return fmt.Sprintf("powershell on %s exited %d: %s", e.Host, e.ExitCode, msg)
}
