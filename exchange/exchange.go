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
// organisation (internal/wsmantest); no real Exchange is reachable where
// segkcd is built, so they have not yet run against a real one.
package exchange

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/segkcd/segkcd/internal/psremote"
)

// Shell runs PowerShell on an Exchange server. Secrets passed to
// RunPowerShellSecret must never appear in its errors (over WinRM they are
// redacted from PowerShell's error records, which quote the failing line).
type Shell interface {
	RunPowerShellSecret(ctx context.Context, script string, secrets ...string) (string, error)
}

// ScriptError is a script that failed on the server.
type ScriptError = psremote.ScriptError

// WinRMConfig says how to reach the management server's WinRM listener.
type WinRMConfig = psremote.Config

// WinRM authentication methods for WinRMConfig.Auth.
const (
	AuthBasic       = psremote.AuthBasic
	AuthNTLM        = psremote.AuthNTLM
	AuthCertificate = psremote.AuthCert
	AuthKerberos    = psremote.AuthKerberos // Config.Kerberos: a gokrb5 client
)

// NewWinRMShell is a Shell over WinRM.
func NewWinRMShell(cfg WinRMConfig) (Shell, error) { return psremote.New(cfg) }

// Org is an Exchange organisation reached through one management shell.
// Use it by pointer; it remembers each server's version.
type Org struct {
	Shell Shell

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
		return Version{}, fmt.Errorf("exchange: unrecognised version %q", s)
	}
	v := Version{Raw: s}
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	v.Build, _ = strconv.Atoi(m[3])
	return v, nil
}

func (o *Org) run(ctx context.Context, op, server, script string, secrets ...string) (string, error) {
	out, err := o.Shell.RunPowerShellSecret(ctx, script, secrets...)
	if err != nil {
		return "", fmt.Errorf("exchange: %s on %s: %w", op, server, err)
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
	qs, err := psremote.Quote(server)
	if err != nil {
		return Version{}, err
	}
	out, err := o.run(ctx, "read version", server, preamble+
		"Get-ExchangeServer -Identity "+qs+" | Select-Object -ExpandProperty AdminDisplayVersion\n")
	if err != nil {
		return Version{}, err
	}
	return ParseVersion(strings.TrimSpace(out))
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
// (Get-ClientAccessService -IncludeAlternateServiceAccountCredentialStatus).
func (o *Org) ASAStatus(ctx context.Context, server string) (*Status, error) {
	v, err := o.Version(ctx, server)
	if err != nil {
		return nil, err
	}
	qs := psremote.MustQuote(server)
	// Dates through Get-Date -Format 'o': PowerShell 5.1's ConvertTo-Json writes
	// DateTime as "\/Date(ms)\/". @() keeps one-element lists as lists.
	script := preamble +
		"$cfg = Get-" + v.casNoun() + " -Identity " + qs + " -IncludeAlternateServiceAccountCredentialStatus | Select-Object -ExpandProperty AlternateServiceAccountConfiguration\n" +
		"$creds = @($cfg | Select-Object -ExpandProperty EffectiveCredentials)\n" +
		"$users = @($creds | Select-Object -ExpandProperty Credential | Select-Object -ExpandProperty UserName)\n" +
		"$added = @($creds | Select-Object -ExpandProperty WhenAddedUTC | Get-Date -Format 'o')\n" +
		"ConvertTo-Json -Compress -InputObject ([pscustomobject]@{ users = $users; added = $added })\n"
	out, err := o.run(ctx, "read ASA status", server, script)
	if err != nil {
		return nil, err
	}
	var raw struct {
		Users []string `json:"users"`
		Added []string `json:"added"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &raw); err != nil || len(raw.Users) != len(raw.Added) {
		return nil, fmt.Errorf("exchange: read ASA status on %s: unexpected output (%v)", server, err)
	}
	st := &Status{Server: server}
	for i := range raw.Users {
		t, err := time.Parse(time.RFC3339Nano, raw.Added[i])
		if err != nil {
			return nil, fmt.Errorf("exchange: read ASA status on %s: date %q: %w", server, raw.Added[i], err)
		}
		c := &Credential{UserName: raw.Users[i], WhenAdded: t}
		switch i {
		case 0:
			st.Latest = c
		case 1:
			st.Previous = c
		}
	}
	return st, nil
}

// SetASA gives a server a new ASA credential (user as DOMAIN\NAME$); the
// one it had becomes Previous. The password travels on the remote
// command's standard input, never in the script or on its command line,
// and is redacted from any error.
func (o *Org) SetASA(ctx context.Context, server, user, password string) error {
	if password == "" || !strings.Contains(user, `\`) {
		return errors.New(`exchange: SetASA needs a password and the user as DOMAIN\NAME$`)
	}
	qu, err := psremote.Quote(user)
	if err != nil {
		return fmt.Errorf("exchange: SetASA: the user name %w", err)
	}
	qs, err := psremote.Quote(server)
	if err != nil {
		return fmt.Errorf("exchange: SetASA: the server name %w", err)
	}
	if strings.ContainsAny(password, "\r\n\x00") {
		return errors.New("exchange: SetASA: the password holds a line break or a NUL")
	}
	v, err := o.Version(ctx, server)
	if err != nil {
		return err
	}
	script := preamble +
		"$secure = ConvertTo-SecureString -String $secret0 -AsPlainText -Force\n" +
		"$cred = New-Object -TypeName 'System.Management.Automation.PSCredential' -ArgumentList " + qu + ", $secure\n" +
		"Set-" + v.casNoun() + " -Identity " + qs + " -AlternateServiceAccountCredential $cred\n"
	_, err = o.run(ctx, "set ASA credential", server, script, password)
	return err
}

// CopyASA copies the latest credential of from to each of to, inside one
// script on the management server (RollAlternateServiceAccountPassword.ps1
// -CopyFrom): the password never leaves Exchange.
func (o *Org) CopyASA(ctx context.Context, from string, to ...string) error {
	vf, err := o.Version(ctx, from)
	if err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString(preamble)
	b.WriteString("$cred = Get-" + vf.casNoun() + " -Identity " + psremote.MustQuote(from) +
		" -IncludeAlternateServiceAccountCredentialPassword | Select-Object -ExpandProperty AlternateServiceAccountConfiguration" +
		" | Select-Object -ExpandProperty EffectiveCredentials | Select-Object -First 1 | Select-Object -ExpandProperty Credential\n")
	for _, t := range to {
		vt, err := o.Version(ctx, t)
		if err != nil {
			return err
		}
		b.WriteString("Set-" + vt.casNoun() + " -Identity " + psremote.MustQuote(t) + " -AlternateServiceAccountCredential $cred\n")
	}
	_, err = o.run(ctx, "copy ASA credential from "+from, strings.Join(to, ", "), b.String())
	return err
}

// RemoveASA removes all ASA credentials of a server (clean-up).
func (o *Org) RemoveASA(ctx context.Context, server string) error {
	v, err := o.Version(ctx, server)
	if err != nil {
		return err
	}
	_, err = o.run(ctx, "remove ASA credentials", server, preamble+
		"Set-"+v.casNoun()+" -Identity "+psremote.MustQuote(server)+" -RemoveAlternateServiceAccountCredentials\n")
	return err
}
