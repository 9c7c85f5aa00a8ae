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
// Commands travel over WinRM (a *winrs.Client) or any winrs.Shell a caller
// plugs in. Every change is a segkcd.Change; every failure an *Error.
// segkcd's tests run them against a WS-Management test server that models a
// Windows host (winrs/winrstest); no real Windows host is reachable where
// segkcd is built, so the PowerShell has not yet been run against real IIS.
package iis

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/segkcd/segkcd"
	"github.com/segkcd/segkcd/internal/wsman"
	"github.com/segkcd/segkcd/winrs"
)

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
	// Shell reaches the server: a *winrs.Client, or any winrs.Shell
	// (winrs/winrstest's host in tests).
	Shell winrs.Shell
	// Name names the server in changes and errors ("CAS1"); empty leaves
	// it out.
	Name string
}

// object is what a change acts on: the server's name, then the location
// or group.
func (s *Server) object(what string) string {
	if s.Name == "" {
		return what
	}
	return s.Name + ": " + what
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

// location is the applicationHost.config location path of site/vdir.
func location(site, vdir string) (string, error) {
	if site == "" {
		site = DefaultSite
	}
	vdir = strings.Trim(vdir, "/")
	if vdir == "" {
		return "", fmt.Errorf("%w: no virtual directory", ErrInvalid)
	}
	return site + "/" + vdir, nil
}

// preamble: every error stops the script, so a half-applied change is
// reported as a failure, never as a success.
const preamble = "$ErrorActionPreference = 'Stop'\nImport-Module WebAdministration\n"

// readScript returns the script that reads a location's settings as JSON.
func readScript(loc string) (string, error) {
	ql, err := wsman.Quote(loc)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(preamble)
	fmt.Fprintf(&b, "$psp = %s\n$loc = %s\n", wsman.MustQuote(psPath), ql)
	get := func(v, sec, name string) {
		fmt.Fprintf(&b, "$%s = Get-WebConfigurationProperty -PSPath $psp -Location $loc -Filter %s -Name %s | Select-Object -ExpandProperty Value\n",
			v, wsman.MustQuote(sec), wsman.MustQuote(name))
	}
	get("basic", basicSec, "enabled")
	get("windows", windowsSec, "enabled")
	get("kernel", windowsSec, "useKernelMode")
	get("apppool", windowsSec, "useAppPoolCredentials")
	// @() keeps a one-provider list an array; -InputObject keeps ConvertTo-Json from unrolling it.
	fmt.Fprintf(&b, "$providers = @(Get-WebConfigurationProperty -PSPath $psp -Location $loc -Filter %s -Name 'Collection' | ForEach-Object -MemberName value)\n",
		wsman.MustQuote(providers))
	b.WriteString("ConvertTo-Json -Compress -InputObject ([pscustomobject]@{ basic = $basic; windows = $windows; useKernelMode = $kernel; useAppPoolCredentials = $apppool; providers = $providers })\n")
	return b.String(), nil
}

// WindowsAuth reads the authentication settings of site/vdir (site "" is
// the Default Web Site).
func (s *Server) WindowsAuth(ctx context.Context, site, vdir string) (*WindowsAuthSettings, error) {
	const op = "read authentication"
	loc, err := location(site, vdir)
	if err != nil {
		return nil, s.fail(op, site+"/"+vdir, err)
	}
	script, err := readScript(loc)
	if err != nil {
		return nil, s.fail(op, loc, fmt.Errorf("%w: %v", ErrInvalid, err))
	}
	out, err := s.Shell.RunPowerShell(ctx, script)
	if err != nil {
		return nil, s.fail(op, loc, err)
	}
	var w WindowsAuthSettings
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &w); err != nil {
		return nil, s.fail(op, loc, fmt.Errorf("%w: %v", ErrUnexpectedOutput, err))
	}
	return &w, nil
}

// ConfigureWindowsAuth makes site/vdir accept Kerberos from the gateway:
// Basic off, Windows on, providers exactly [Negotiate] (or [Negotiate,
// NTLM] with KeepNTLM), kernel mode and app-pool credentials on. It
// changes only what differs and reads the result back.
func (s *Server) ConfigureWindowsAuth(ctx context.Context, site, vdir string, opts WindowsAuthOptions) (segkcd.Change, error) {
	const op = "configure Windows authentication"
	loc, err := location(site, vdir)
	if err != nil {
		return segkcd.Change{}, s.fail(op, site+"/"+vdir, err)
	}
	have, err := s.WindowsAuth(ctx, site, vdir)
	if err != nil {
		return segkcd.Change{}, err
	}
	want := opts.Want()
	script, details := configureScript(loc, *have, want)
	ch := segkcd.Change{What: op, Object: s.object(loc), Action: segkcd.Unchanged, Details: details}
	if len(details) == 0 {
		return ch, nil
	}
	if _, err := s.Shell.RunPowerShell(ctx, script); err != nil {
		return segkcd.Change{}, s.fail(op, loc, err)
	}
	ch.Action = segkcd.Modified
	got, err := s.WindowsAuth(ctx, site, vdir)
	if err != nil {
		return ch, err
	}
	if diff := diffSettings(*got, want); len(diff) > 0 {
		return ch, s.fail(op, loc, fmt.Errorf("%w: %s", ErrNotApplied, strings.Join(diff, "; ")))
	}
	return ch, nil
}

// Diff lists what differs from want, one line per setting
// ("useKernelMode: false -> true"); empty when nothing does.
func (w WindowsAuthSettings) Diff(want WindowsAuthSettings) []string { return diffSettings(w, want) }

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
	fmt.Fprintf(&b, "$psp = %s\n$loc = %s\n", wsman.MustQuote(psPath), wsman.MustQuote(loc))
	set := func(sec, name string, h, w bool) {
		if h != w {
			fmt.Fprintf(&b, "Set-WebConfigurationProperty -PSPath $psp -Location $loc -Filter %s -Name %s -Value $%v\n",
				wsman.MustQuote(sec), wsman.MustQuote(name), w)
		}
	}
	set(basicSec, "enabled", have.BasicEnabled, want.BasicEnabled)
	set(windowsSec, "enabled", have.WindowsEnabled, want.WindowsEnabled)
	set(windowsSec, "useKernelMode", have.UseKernelMode, want.UseKernelMode)
	set(windowsSec, "useAppPoolCredentials", have.UseAppPoolCredentials, want.UseAppPoolCredentials)
	if !sameList(have.Providers, want.Providers) {
		// Adding a provider that is there is an error on Windows: clear, then add in order.
		fmt.Fprintf(&b, "Clear-WebConfiguration -PSPath $psp -Location $loc -Filter %s\n", wsman.MustQuote(providers))
		for _, p := range want.Providers {
			fmt.Fprintf(&b, "Add-WebConfigurationProperty -PSPath $psp -Location $loc -Filter %s -Name '.' -Value @{ value = %s }\n",
				wsman.MustQuote(providers), wsman.MustQuote(p))
		}
	}
	return b.String(), details
}

// LocalGroupMembers lists a local group's members (e.g. CORP\svc_awseg).
func (s *Server) LocalGroupMembers(ctx context.Context, group string) ([]string, error) {
	const op = "read group members"
	qg, err := wsman.Quote(group)
	if err != nil {
		return nil, s.fail(op, group, fmt.Errorf("%w: the group name: %v", ErrInvalid, err))
	}
	script := "$ErrorActionPreference = 'Stop'\n" +
		"ConvertTo-Json -Compress -InputObject @(Get-LocalGroupMember -Group " + qg + " | ForEach-Object -MemberName Name)\n"
	out, err := s.Shell.RunPowerShell(ctx, script)
	if err != nil {
		return nil, s.fail(op, group, err)
	}
	var members []string
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &members); err != nil {
		return nil, s.fail(op, group, fmt.Errorf("%w: %v", ErrUnexpectedOutput, err))
	}
	return members, nil
}

// AddLocalGroupMember adds member (DOMAIN\name) to a local group, unless
// it is already there (Add-LocalGroupMember fails on a present member).
func (s *Server) AddLocalGroupMember(ctx context.Context, group, member string) (segkcd.Change, error) {
	const op = "add group member"
	ch := segkcd.Change{What: op, Object: s.object(group), Action: segkcd.Unchanged, Details: []string{"member " + member}}
	members, err := s.LocalGroupMembers(ctx, group)
	if err != nil {
		return segkcd.Change{}, err
	}
	for _, m := range members {
		if strings.EqualFold(m, member) {
			return ch, nil
		}
	}
	qg, _ := wsman.Quote(group) // LocalGroupMembers quoted it
	qm, err := wsman.Quote(member)
	if err != nil {
		return segkcd.Change{}, s.fail(op, group, fmt.Errorf("%w: the member name: %v", ErrInvalid, err))
	}
	script := "$ErrorActionPreference = 'Stop'\nAdd-LocalGroupMember -Group " + qg + " -Member " + qm + "\n"
	if _, err := s.Shell.RunPowerShell(ctx, script); err != nil {
		return segkcd.Change{}, s.fail(op, group, err)
	}
	ch.Action = segkcd.Modified
	ch.Details = []string{"member += " + member}
	return ch, nil
}

// ExtendedProtection is a virtual directory's Extended Protection for
// Authentication (windowsAuthentication/extendedProtection): whether IIS
// checks the channel binding inside each Kerberos or NTLM token.
type ExtendedProtection struct {
	// TokenChecking is None, Allow (check a binding the client sends) or
	// Require (refuse a token without the connection's binding). Exchange
	// 2019 CU14 and later set it; segkcd's gateway binds its tokens, so
	// Require works with it.
	TokenChecking string `json:"tokenChecking"`
	// Flags are IIS's extendedProtection flags, comma-separated: None (the
	// default), or Proxy, NoServiceNameCheck, AllowDotlessSpn,
	// ProxyCohosting. Proxy is for TLS that ends before IIS.
	Flags string `json:"flags"`
}

// tokenCheckings and epFlags are the values IIS takes, as it spells them.
var (
	tokenCheckings = []string{"None", "Allow", "Require"}
	epFlags        = []string{"None", "Proxy", "NoServiceNameCheck", "AllowDotlessSpn", "ProxyCohosting"}
)

// normalize spells e as IIS does (empty Flags is None), or fails for a
// value IIS does not take.
func (e ExtendedProtection) normalize() (ExtendedProtection, error) {
	tc, ok := spelled(tokenCheckings, e.TokenChecking)
	if !ok {
		return e, fmt.Errorf("%w: tokenChecking %q: None, Allow or Require", ErrInvalid, e.TokenChecking)
	}
	var flags []string
	for _, f := range strings.Split(e.Flags, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		s, ok := spelled(epFlags, f)
		if !ok {
			return e, fmt.Errorf("%w: extendedProtection flag %q", ErrInvalid, f)
		}
		if s != "None" {
			flags = append(flags, s)
		}
	}
	if len(flags) == 0 {
		flags = []string{"None"}
	}
	return ExtendedProtection{TokenChecking: tc, Flags: strings.Join(flags, ",")}, nil
}

// Check reports a value IIS does not take, as an error matching
// ErrInvalid, before anything is sent to a server.
func (e ExtendedProtection) Check() error {
	_, err := e.normalize()
	return err
}

// spelled finds v among values, case-insensitively, as values spell it.
func spelled(values []string, v string) (string, bool) {
	for _, s := range values {
		if strings.EqualFold(s, strings.TrimSpace(v)) {
			return s, true
		}
	}
	return "", false
}

// Diff lists what differs from want ("tokenChecking: None -> Require");
// empty when nothing does.
func (e ExtendedProtection) Diff(want ExtendedProtection) []string {
	var d []string
	if !strings.EqualFold(e.TokenChecking, want.TokenChecking) {
		d = append(d, fmt.Sprintf("extendedProtection tokenChecking: %s -> %s", e.TokenChecking, want.TokenChecking))
	}
	if !sameFlags(e.Flags, want.Flags) {
		d = append(d, fmt.Sprintf("extendedProtection flags: %s -> %s", e.Flags, want.Flags))
	}
	return d
}

// sameFlags compares comma-separated flag sets, in any order and case.
func sameFlags(a, b string) bool {
	set := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, f := range strings.Split(s, ",") {
			if f = strings.ToLower(strings.TrimSpace(f)); f != "" && f != "none" {
				m[f] = true
			}
		}
		return m
	}
	x, y := set(a), set(b)
	if len(x) != len(y) {
		return false
	}
	for f := range x {
		if !y[f] {
			return false
		}
	}
	return true
}

// ExtendedProtection reads site/vdir's Extended Protection (site "" is
// the Default Web Site).
func (s *Server) ExtendedProtection(ctx context.Context, site, vdir string) (*ExtendedProtection, error) {
	const op = "read Extended Protection"
	loc, err := location(site, vdir)
	if err != nil {
		return nil, s.fail(op, site+"/"+vdir, err)
	}
	ql, err := wsman.Quote(loc)
	if err != nil {
		return nil, s.fail(op, loc, fmt.Errorf("%w: %v", ErrInvalid, err))
	}
	var b strings.Builder
	b.WriteString(preamble)
	fmt.Fprintf(&b, "$psp = %s\n$loc = %s\n", wsman.MustQuote(psPath), ql)
	// Enumerated attributes come back as their names (strings), as
	// Microsoft's ExchangeExtendedProtectionManagement script reads them.
	for _, v := range [][2]string{{"tc", "extendedProtection.tokenChecking"}, {"fl", "extendedProtection.flags"}} {
		fmt.Fprintf(&b, "$%s = Get-WebConfigurationProperty -PSPath $psp -Location $loc -Filter %s -Name %s\n",
			v[0], wsman.MustQuote(windowsSec), wsman.MustQuote(v[1]))
	}
	b.WriteString("ConvertTo-Json -Compress -InputObject ([pscustomobject]@{ tokenChecking = $tc; flags = $fl })\n")
	out, err := s.Shell.RunPowerShell(ctx, b.String())
	if err != nil {
		return nil, s.fail(op, loc, err)
	}
	var e ExtendedProtection
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &e); err != nil {
		return nil, s.fail(op, loc, fmt.Errorf("%w: %v", ErrUnexpectedOutput, err))
	}
	return &e, nil
}

// ConfigureExtendedProtection sets site/vdir's Extended Protection to want
// (Flags "" is None), as Exchange's own ExchangeExtendedProtectionManagement
// script does, changing only what differs and reading the result back. With
// tokenChecking Require, every client of the virtual directory must bind
// its tokens: segkcd's gateway does (seg.ProxyHandler, by default), as
// Windows clients do.
func (s *Server) ConfigureExtendedProtection(ctx context.Context, site, vdir string, want ExtendedProtection) (segkcd.Change, error) {
	const op = "configure Extended Protection"
	loc, err := location(site, vdir)
	if err != nil {
		return segkcd.Change{}, s.fail(op, site+"/"+vdir, err)
	}
	if want, err = want.normalize(); err != nil {
		return segkcd.Change{}, s.fail(op, loc, err)
	}
	have, err := s.ExtendedProtection(ctx, site, vdir)
	if err != nil {
		return segkcd.Change{}, err
	}
	details := have.Diff(want)
	ch := segkcd.Change{What: op, Object: s.object(loc), Action: segkcd.Unchanged, Details: details}
	if len(details) == 0 {
		return ch, nil
	}
	var b strings.Builder
	b.WriteString(preamble)
	fmt.Fprintf(&b, "$psp = %s\n$loc = %s\n", wsman.MustQuote(psPath), wsman.MustQuote(loc))
	for _, v := range [][2]string{{"extendedProtection.tokenChecking", want.TokenChecking}, {"extendedProtection.flags", want.Flags}} {
		fmt.Fprintf(&b, "Set-WebConfigurationProperty -PSPath $psp -Location $loc -Filter %s -Name %s -Value %s\n",
			wsman.MustQuote(windowsSec), wsman.MustQuote(v[0]), wsman.MustQuote(v[1]))
	}
	if _, err := s.Shell.RunPowerShell(ctx, b.String()); err != nil {
		return segkcd.Change{}, s.fail(op, loc, err)
	}
	ch.Action = segkcd.Modified
	got, err := s.ExtendedProtection(ctx, site, vdir)
	if err != nil {
		return ch, err
	}
	if diff := got.Diff(want); len(diff) > 0 {
		return ch, s.fail(op, loc, fmt.Errorf("%w: %s", ErrNotApplied, strings.Join(diff, "; ")))
	}
	return ch, nil
}
