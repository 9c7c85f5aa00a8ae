// Package exchange manages the Alternate Service Account (ASA) credential
// of Exchange Client Access servers: status, copy, removal, and the roll
// that RollAlternateServiceAccountPassword.ps1 performs, over PowerShell.
//
// Every server of a load-balanced mail namespace must decrypt the Kerberos
// tickets issued for its SPN (http/mail.corp.example.com), which is
// registered on the ASA computer account. So every server holds the ASA's
// password, and a roll must reach all servers before AD changes the key.
//
// All cmdlets run through one management shell (an Exchange server reached
// over WinRM) and name their target with -Identity, as the Exchange script
// does; the credentials live in the organisation's configuration, so copies
// happen inside one script and existing passwords never travel.
//
// The commands load the Exchange snap-in in powershell.exe, because WinRM's
// remote shell (WinRS) is what masterzen/winrm speaks, not the PowerShell
// remoting protocol of the http://server/PowerShell endpoint. segkcd tests
// them against a WS-Management test server that models an Exchange
// organisation (winrs/winrstest); no real Exchange is reachable where
// segkcd is built, so they have not yet run against a real one.
//
// Org.Shell is a *winrs.Client or any winrs.Shell. Operations return a
// segkcd.Change, failures an *Error (or a *RollError for a roll, which
// says the step and the state each server was left in).
package exchange

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/segkcd/segkcd"
	"github.com/segkcd/segkcd/internal/wsman"
	"github.com/segkcd/segkcd/winrs"
)

// Org is an Exchange organisation reached through one management shell.
// Use it by pointer; it remembers each server's version.
type Org struct {
	// Shell reaches the management server: a *winrs.Client, or any
	// winrs.Shell (winrs/winrstest's host in tests).
	Shell winrs.Shell

	mu       sync.Mutex
	versions map[string]Version // lower-case server -> version, read once
}

const preamble = "$ErrorActionPreference = 'Stop'\nAdd-PSSnapin -Name 'Microsoft.Exchange.Management.PowerShell.SnapIn'\n"

// Version is an Exchange server's version.
type Version struct {
	Major, Minor, Build int
	Raw                 string // AdminDisplayVersion, e.g. "Version 15.2 (Build 1544.4)"
}

// Product names the release: 2013 (15.0), 2016 (15.1), 2019 or SE (15.2).
func (v Version) Product() string {
	switch {
	case v.Major == 15 && v.Minor == 0:
		return "2013"
	case v.Major == 15 && v.Minor == 1:
		return "2016"
	case v.Major == 15 && v.Minor >= 2:
		return "2019/SE"
	}
	return "unknown"
}

// casNoun is the cmdlet noun: ClientAccessServer on 2013, ClientAccessService from 2016.
func (v Version) casNoun() string {
	if v.Major == 15 && v.Minor == 0 {
		return "ClientAccessServer"
	}
	return "ClientAccessService"
}

var versionRE = regexp.MustCompile(`(\d+)\.(\d+) \(Build (\d+)`)

// ParseVersion reads AdminDisplayVersion.
func ParseVersion(s string) (Version, error) {
	m := versionRE.FindStringSubmatch(s)
	if m == nil {
		return Version{}, &Error{Op: "parse version", Err: fmt.Errorf("%w: %q is no Exchange version", ErrUnexpectedOutput, s)}
	}
	v := Version{Raw: s}
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	v.Build, _ = strconv.Atoi(m[3])
	return v, nil
}

func (o *Org) run(ctx context.Context, op, server, script string, secrets ...string) (string, error) {
	out, err := o.Shell.RunPowerShell(ctx, script, secrets...)
	if err != nil {
		return "", &Error{Op: op, Server: server, Err: err}
	}
	return out, nil
}

// Version reads a server's version, which decides the cmdlet names. It is
// read once per server: a roll names each server in several scripts.
func (o *Org) Version(ctx context.Context, server string) (Version, error) {
	key := strings.ToLower(server)
	o.mu.Lock()
	v, ok := o.versions[key]
	o.mu.Unlock()
	if ok {
		return v, nil
	}
	v, err := o.readVersion(ctx, server)
	if err != nil {
		return Version{}, err
	}
	o.mu.Lock()
	if o.versions == nil {
		o.versions = map[string]Version{}
	}
	o.versions[key] = v
	o.mu.Unlock()
	return v, nil
}

func (o *Org) readVersion(ctx context.Context, server string) (Version, error) {
	qs, err := wsman.Quote(server)
	if err != nil {
		return Version{}, invalid("read version", server, "the server name: %v", err)
	}
	out, err := o.run(ctx, "read version", server, preamble+
		"Get-ExchangeServer -Identity "+qs+" | Select-Object -ExpandProperty AdminDisplayVersion\n")
	if err != nil {
		return Version{}, err
	}
	v, err := ParseVersion(strings.TrimSpace(out))
	if err != nil {
		return Version{}, &Error{Op: "read version", Server: server, Err: errors.Unwrap(err)}
	}
	return v, nil
}

// Credential is one ASA credential as a server holds it (no password).
type Credential struct {
	UserName  string
	WhenAdded time.Time
}

// Status is a server's ASA credentials: Latest is what it uses first,
// Previous what it still accepts (tickets issued before the last roll).
type Status struct {
	Server           string
	Latest, Previous *Credential
}

// ASAStatus reads a server's credentials
// (Get-ClientAccessService -IncludeAlternateServiceAccountCredentialStatus),
// without their passwords.
func (o *Org) ASAStatus(ctx context.Context, server string) (*Status, error) {
	cs, err := o.readCredentials(ctx, "read ASA status", server, false)
	if err != nil {
		return nil, err
	}
	st := statusOf(server, cs)
	return &st, nil
}

// SetASA gives a server a new ASA credential (user as DOMAIN\NAME$); the
// one it had becomes Previous. The password travels on the remote
// command's standard input, never in the script or on its command line,
// and is redacted from any error. It always modifies: each call adds a
// credential (with its time), as Set-ClientAccessService does.
func (o *Org) SetASA(ctx context.Context, server, user, password string) (segkcd.Change, error) {
	const op = "set ASA credential"
	if password == "" || !strings.Contains(user, `\`) {
		return segkcd.Change{}, invalid(op, server, `a password and the user as DOMAIN\NAME$ are needed`)
	}
	qu, err := wsman.Quote(user)
	if err != nil {
		return segkcd.Change{}, invalid(op, server, "the user name: %v", err)
	}
	qs, err := wsman.Quote(server)
	if err != nil {
		return segkcd.Change{}, invalid(op, server, "the server name: %v", err)
	}
	if strings.ContainsAny(password, "\r\n\x00") {
		return segkcd.Change{}, invalid(op, server, "the password holds a line break or a NUL")
	}
	v, err := o.Version(ctx, server)
	if err != nil {
		return segkcd.Change{}, err
	}
	script := preamble +
		"$secure = ConvertTo-SecureString -String $secret0 -AsPlainText -Force\n" +
		"$cred = New-Object -TypeName 'System.Management.Automation.PSCredential' -ArgumentList " + qu + ", $secure\n" +
		"Set-" + v.casNoun() + " -Identity " + qs + " -AlternateServiceAccountCredential $cred\n"
	if _, err := o.run(ctx, op, server, script, password); err != nil {
		return segkcd.Change{}, err
	}
	return segkcd.Change{What: op, Object: server, Action: segkcd.Modified, Details: []string{"Latest: " + user + " (new password)"}}, nil
}

// CopyASA copies the latest credential of from to each of to, inside one
// script on the management server (RollAlternateServiceAccountPassword.ps1
// -CopyFrom): the password never leaves Exchange.
func (o *Org) CopyASA(ctx context.Context, from string, to ...string) (segkcd.Change, error) {
	op := "copy ASA credential from " + from
	vf, err := o.Version(ctx, from)
	if err != nil {
		return segkcd.Change{}, err
	}
	var b strings.Builder
	b.WriteString(preamble)
	b.WriteString("$cred = Get-" + vf.casNoun() + " -Identity " + wsman.MustQuote(from) +
		" -IncludeAlternateServiceAccountCredentialPassword | Select-Object -ExpandProperty AlternateServiceAccountConfiguration" +
		" | Select-Object -ExpandProperty EffectiveCredentials | Select-Object -First 1 | Select-Object -ExpandProperty Credential\n")
	for _, t := range to {
		vt, err := o.Version(ctx, t)
		if err != nil {
			return segkcd.Change{}, err
		}
		b.WriteString("Set-" + vt.casNoun() + " -Identity " + wsman.MustQuote(t) + " -AlternateServiceAccountCredential $cred\n")
	}
	if _, err := o.run(ctx, op, strings.Join(to, ", "), b.String()); err != nil {
		return segkcd.Change{}, err
	}
	return segkcd.Change{What: op, Object: strings.Join(to, ", "), Action: segkcd.Modified,
		Details: []string{"Latest: " + from + "'s Latest"}}, nil
}

// RemoveASA removes all ASA credentials of a server (clean-up); unchanged
// when it holds none.
func (o *Org) RemoveASA(ctx context.Context, server string) (segkcd.Change, error) {
	const op = "remove ASA credentials"
	st, err := o.ASAStatus(ctx, server)
	if err != nil {
		return segkcd.Change{}, err
	}
	if st.Latest == nil {
		return segkcd.Change{What: op, Object: server, Action: segkcd.Unchanged}, nil
	}
	v, err := o.Version(ctx, server)
	if err != nil {
		return segkcd.Change{}, err
	}
	if _, err := o.run(ctx, op, server, preamble+
		"Set-"+v.casNoun()+" -Identity "+wsman.MustQuote(server)+" -RemoveAlternateServiceAccountCredentials\n"); err != nil {
		return segkcd.Change{}, err
	}
	ch := segkcd.Change{What: op, Object: server, Action: segkcd.Removed, Details: []string{"Latest: " + st.Latest.UserName}}
	if st.Previous != nil {
		ch.Details = append(ch.Details, "Previous: "+st.Previous.UserName)
	}
	return ch, nil
}
