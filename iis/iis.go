// Package iis sets up Windows authentication for Kerberos on the Exchange
// virtual directories (Microsoft-Server-ActiveSync, EWS) and manages local
// group membership (IIS_IUSRS), through PowerShell on the server.
//
// For KCD every Client Access server must accept the gateway's Kerberos
// tickets: Basic authentication off, Windows authentication on with the
// Negotiate provider, and kernel-mode authentication with app-pool
// credentials, so that the shared Alternate Service Account key (not each
// server's own) decrypts the tickets. This package reads the settings
// first, changes only what differs, reads them again to check, and reports
// the difference: a second run changes nothing.
//
// Commands travel over WinRM (NewWinRMShell) or any Shell a caller plugs in.
// segkcd's tests run them against a WS-Management test server that models a
// Windows host (internal/wsmantest); no real Windows host is reachable where
// segkcd is built, so the PowerShell has not yet been run against real IIS.
package iis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/segkcd/segkcd/internal/psremote"
)

// Shell runs a PowerShell script on the server and returns its standard
// output. A failed script is an error; over WinRM, a *ScriptError.
type Shell interface {
	RunPowerShell(ctx context.Context, script string) (string, error)
}

// ScriptError is a script that failed on the server: its exit code and
// its error text, read from PowerShell's CLIXML stderr.
type ScriptError = psremote.ScriptError

// WinRMConfig says how to reach the server's WinRM listener.
type WinRMConfig = psremote.Config

// WinRM authentication methods for WinRMConfig.Auth.
const (
	AuthBasic       = psremote.AuthBasic
	AuthNTLM        = psremote.AuthNTLM
	AuthCertificate = psremote.AuthCert
	AuthKerberos    = psremote.AuthKerberos // Config.Kerberos: a gokrb5 client
)

// NewWinRMShell is a Shell over WinRM (masterzen/winrm).
func NewWinRMShell(cfg WinRMConfig) (Shell, error) { return psremote.New(cfg) }

// Defaults for Exchange.
const (
	DefaultSite = "Default Web Site"
	ActiveSync  = "Microsoft-Server-ActiveSync"
	EWS         = "EWS"
	// IISUsers is the local group of IIS worker identities.
	IISUsers = "IIS_IUSRS"
)

const (
	psPath     = "MACHINE/WEBROOT/APPHOST"
	basicSec   = "system.webServer/security/authentication/basicAuthentication"
	windowsSec = "system.webServer/security/authentication/windowsAuthentication"
	providers  = windowsSec + "/providers"
)

// Server is one IIS server.
type Server struct {
	Shell Shell
}

// WindowsAuthSettings are the authentication settings of a virtual directory.
type WindowsAuthSettings struct {
	BasicEnabled          bool     `json:"basic"`
	WindowsEnabled        bool     `json:"windows"`
	Providers             []string `json:"providers"`
	UseKernelMode         bool     `json:"useKernelMode"`
	UseAppPoolCredentials bool     `json:"useAppPoolCredentials"`
}

// WindowsAuthOptions tune ConfigureWindowsAuth.
type WindowsAuthOptions struct {
	// KeepNTLM keeps NTLM after Negotiate for clients without Kerberos
	// (Negotiate alone is what KCD needs).
	KeepNTLM bool
}

// Want is the settings ConfigureWindowsAuth makes.
func (o WindowsAuthOptions) Want() WindowsAuthSettings {
	w := WindowsAuthSettings{WindowsEnabled: true, Providers: []string{"Negotiate"}, UseKernelMode: true, UseAppPoolCredentials: true}
	if o.KeepNTLM {
		w.Providers = append(w.Providers, "NTLM")
	}
	return w
}

// Change reports what an operation did.
type Change struct {
	Target  string   // "Default Web Site/EWS", or the group
	Changed bool     // false: it already was as asked
	Details []string // e.g. "basicAuthentication enabled: true -> false"
}

// String renders the change on one line.
func (c Change) String() string {
	if !c.Changed {
		return "unchanged " + c.Target
	}
	return "modified " + c.Target + " (" + strings.Join(c.Details, "; ") + ")"
}

// location is the applicationHost.config location path of site/vdir.
func location(site, vdir string) (string, error) {
	if site == "" {
		site = DefaultSite
	}
	vdir = strings.Trim(vdir, "/")
	if vdir == "" {
		return "", errors.New("iis: no virtual directory")
	}
	return site + "/" + vdir, nil
}

// preamble: every error stops the script, so a half-applied change is
// reported as a failure, never as a success.
const preamble = "$ErrorActionPreference = 'Stop'\nImport-Module WebAdministration\n"

// readScript returns the script that reads a location's settings as JSON.
func readScript(loc string) (string, error) {
	ql, err := psremote.Quote(loc)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(preamble)
	fmt.Fprintf(&b, "$psp = %s\n$loc = %s\n", psremote.MustQuote(psPath), ql)
	get := func(v, sec, name string) {
		fmt.Fprintf(&b, "$%s = Get-WebConfigurationProperty -PSPath $psp -Location $loc -Filter %s -Name %s | Select-Object -ExpandProperty Value\n",
			v, psremote.MustQuote(sec), psremote.MustQuote(name))
	}
	get("basic", basicSec, "enabled")
	get("windows", windowsSec, "enabled")
	get("kernel", windowsSec, "useKernelMode")
	get("apppool", windowsSec, "useAppPoolCredentials")
	// @() keeps a one-provider list an array; -InputObject keeps ConvertTo-Json from unrolling it.
	fmt.Fprintf(&b, "$providers = @(Get-WebConfigurationProperty -PSPath $psp -Location $loc -Filter %s -Name 'Collection' | ForEach-Object -MemberName value)\n",
		psremote.MustQuote(providers))
	b.WriteString("ConvertTo-Json -Compress -InputObject ([pscustomobject]@{ basic = $basic; windows = $windows; useKernelMode = $kernel; useAppPoolCredentials = $apppool; providers = $providers })\n")
	return b.String(), nil
}

// WindowsAuth reads the authentication settings of site/vdir (site "" is
// the Default Web Site).
func (s *Server) WindowsAuth(ctx context.Context, site, vdir string) (*WindowsAuthSettings, error) {
	loc, err := location(site, vdir)
	if err != nil {
		return nil, err
	}
	script, err := readScript(loc)
	if err != nil {
		return nil, fmt.Errorf("iis: %s: %w", loc, err)
	}
	out, err := s.Shell.RunPowerShell(ctx, script)
	if err != nil {
		return nil, fmt.Errorf("iis: read authentication of %s: %w", loc, err)
	}
	var w WindowsAuthSettings
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &w); err != nil {
		return nil, fmt.Errorf("iis: read authentication of %s: unexpected output: %w", loc, err)
	}
	return &w, nil
}

// ConfigureWindowsAuth makes site/vdir accept Kerberos from the gateway:
// Basic off, Windows on, providers exactly [Negotiate] (or [Negotiate,
// NTLM] with KeepNTLM), kernel mode and app-pool credentials on. It
// changes only what differs and reads the result back.
func (s *Server) ConfigureWindowsAuth(ctx context.Context, site, vdir string, opts WindowsAuthOptions) (Change, error) {
	loc, err := location(site, vdir)
	if err != nil {
		return Change{}, err
	}
	have, err := s.WindowsAuth(ctx, site, vdir)
	if err != nil {
		return Change{}, err
	}
	want := opts.Want()
	script, details := configureScript(loc, *have, want)
	ch := Change{Target: loc, Details: details}
	if len(details) == 0 {
		return ch, nil
	}
	if _, err := s.Shell.RunPowerShell(ctx, script); err != nil {
		return ch, fmt.Errorf("iis: configure %s (run it again to finish): %w", loc, err)
	}
	ch.Changed = true
	got, err := s.WindowsAuth(ctx, site, vdir)
	if err != nil {
		return ch, err
	}
	if diff := diffSettings(*got, want); len(diff) > 0 {
		return ch, fmt.Errorf("iis: %s still differs after the change: %s", loc, strings.Join(diff, "; "))
	}
	return ch, nil
}

// diffSettings lists what differs between have and want.
func diffSettings(have, want WindowsAuthSettings) []string {
	var d []string
	add := func(name string, h, w bool) {
		if h != w {
			d = append(d, fmt.Sprintf("%s: %v -> %v", name, h, w))
		}
	}
	add("basicAuthentication enabled", have.BasicEnabled, want.BasicEnabled)
	add("windowsAuthentication enabled", have.WindowsEnabled, want.WindowsEnabled)
	add("useKernelMode", have.UseKernelMode, want.UseKernelMode)
	add("useAppPoolCredentials", have.UseAppPoolCredentials, want.UseAppPoolCredentials)
	if !sameList(have.Providers, want.Providers) {
		d = append(d, fmt.Sprintf("providers: %v -> %v", have.Providers, want.Providers))
	}
	return d
}

// sameList compares provider lists in order (the order is the preference), case-insensitively.
func sameList(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !strings.EqualFold(a[i], b[i]) {
			return false
		}
	}
	return true
}

// configureScript is the script that turns have into want, and what it changes.
func configureScript(loc string, have, want WindowsAuthSettings) (string, []string) {
	details := diffSettings(have, want)
	if len(details) == 0 {
		return "", nil
	}
	var b strings.Builder
	b.WriteString(preamble)
	fmt.Fprintf(&b, "$psp = %s\n$loc = %s\n", psremote.MustQuote(psPath), psremote.MustQuote(loc))
	set := func(sec, name string, h, w bool) {
		if h != w {
			fmt.Fprintf(&b, "Set-WebConfigurationProperty -PSPath $psp -Location $loc -Filter %s -Name %s -Value $%v\n",
				psremote.MustQuote(sec), psremote.MustQuote(name), w)
		}
	}
	set(basicSec, "enabled", have.BasicEnabled, want.BasicEnabled)
	set(windowsSec, "enabled", have.WindowsEnabled, want.WindowsEnabled)
	set(windowsSec, "useKernelMode", have.UseKernelMode, want.UseKernelMode)
	set(windowsSec, "useAppPoolCredentials", have.UseAppPoolCredentials, want.UseAppPoolCredentials)
	if !sameList(have.Providers, want.Providers) {
		// Adding a provider that is there is an error on Windows: clear, then add in order.
		fmt.Fprintf(&b, "Clear-WebConfiguration -PSPath $psp -Location $loc -Filter %s\n", psremote.MustQuote(providers))
		for _, p := range want.Providers {
			fmt.Fprintf(&b, "Add-WebConfigurationProperty -PSPath $psp -Location $loc -Filter %s -Name '.' -Value @{ value = %s }\n",
				psremote.MustQuote(providers), psremote.MustQuote(p))
		}
	}
	return b.String(), details
}

// LocalGroupMembers lists a local group's members (e.g. CORP\svc_awseg).
func (s *Server) LocalGroupMembers(ctx context.Context, group string) ([]string, error) {
	qg, err := psremote.Quote(group)
	if err != nil {
		return nil, fmt.Errorf("iis: group %q: %w", group, err)
	}
	script := "$ErrorActionPreference = 'Stop'\n" +
		"ConvertTo-Json -Compress -InputObject @(Get-LocalGroupMember -Group " + qg + " | ForEach-Object -MemberName Name)\n"
	out, err := s.Shell.RunPowerShell(ctx, script)
	if err != nil {
		return nil, fmt.Errorf("iis: members of %s: %w", group, err)
	}
	var members []string
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &members); err != nil {
		return nil, fmt.Errorf("iis: members of %s: unexpected output: %w", group, err)
	}
	return members, nil
}

// AddLocalGroupMember adds member (DOMAIN\name) to a local group, unless
// it is already there (Add-LocalGroupMember fails on a present member).
func (s *Server) AddLocalGroupMember(ctx context.Context, group, member string) (Change, error) {
	ch := Change{Target: group}
	members, err := s.LocalGroupMembers(ctx, group)
	if err != nil {
		return ch, err
	}
	for _, m := range members {
		if strings.EqualFold(m, member) {
			return ch, nil
		}
	}
	qg, err := psremote.Quote(group)
	if err != nil {
		return ch, err
	}
	qm, err := psremote.Quote(member)
	if err != nil {
		return ch, fmt.Errorf("iis: member %q: %w", member, err)
	}
	script := "$ErrorActionPreference = 'Stop'\nAdd-LocalGroupMember -Group " + qg + " -Member " + qm + "\n"
	if _, err := s.Shell.RunPowerShell(ctx, script); err != nil {
		return ch, fmt.Errorf("iis: add %s to %s: %w", member, group, err)
	}
	ch.Changed = true
	ch.Details = []string{"member += " + member}
	return ch, nil
}
