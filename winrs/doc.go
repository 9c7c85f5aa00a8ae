// Package winrs runs PowerShell on Windows hosts over WinRM's remote shell
// (WinRS over WS-Management, MS-WSMV), as the exchange and iis packages
// need: a *Client for one host, with Basic, NTLM, Certificate or Kerberos
// logons, and a Shell interface that both packages take.
//
// On plain HTTP, NTLM and Kerberos seal every message with their session
// (what Windows does with AllowUnencrypted=false, the default); over TLS,
// NTLM binds its logon to the host's certificate. Secrets a script needs
// travel on the command's standard input, never in the script or on the
// command line, which process-creation auditing records. Long scripts are
// staged through a temporary file, within cmd.exe's 8191-character limit.
//
// Errors: *ScriptError is a script that ran and failed; *Error is a
// failure to get there, matching ErrUnauthorized (the host refused the
// logon) or ErrUnreachable (no answer) with errors.Is, with Hint for the
// administrator.
//
// The package is tested against winrs/winrstest, a WS-Management test host
// that speaks the real protocol and models a Windows host's state, and
// against pywinrm and MIT Kerberos as peers. No real Windows host is
// reachable where segkcd is built.
package winrs

import (
	"context"

	"github.com/segkcd/segkcd/internal/wsman"
)

// Shell runs a PowerShell script on a host and returns its standard
// output. Secrets (passwords) go apart from the script: the script reads
// them as $secret0, $secret1, ..., and they must never appear in the
// Shell's errors. *Client is the Shell over WinRM; exchange and iis take
// any Shell, so a caller can plug in its own transport, or a fake.
type Shell interface {
	RunPowerShell(ctx context.Context, script string, secrets ...string) (string, error)
}

// Quote returns s as a PowerShell single-quoted string literal, safe to
// splice into a script: every quote character PowerShell knows (ASCII and
// the four Unicode ones) is doubled. A value holding NUL or invalid UTF-8
// fails with ErrUnquotable.
func Quote(s string) (string, error) { return wsman.Quote(s) }

var _ Shell = (*Client)(nil)
