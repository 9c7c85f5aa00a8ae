package iis_test

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segkcd/segkcd/iis"
	"github.com/segkcd/segkcd/winrs"
	"github.com/segkcd/segkcd/winrs/winrstest"
)

var update = flag.Bool("update", false, "rewrite the golden scripts in testdata")

// server is the iis package over real WinRM (masterzen, HTTP) against the
// WS-Man test host.
func server(t *testing.T) (*iis.Server, *winrstest.Server) {
	t.Helper()
	ts := winrstest.StartTest(t, winrstest.NewHost("cas1"))
	sh, err := winrs.New(ts.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	return &iis.Server{Shell: sh}, ts
}

func TestConfigureWindowsAuth(t *testing.T) {
	s, ts := server(t)
	ctx := context.Background()
	before, err := s.WindowsAuth(ctx, "", iis.ActiveSync)
	if err != nil {
		t.Fatal(err)
	}
	if !before.BasicEnabled || before.WindowsEnabled {
		t.Fatalf("model default: %+v", before)
	}
	ch, err := s.ConfigureWindowsAuth(ctx, iis.DefaultSite, iis.ActiveSync, iis.WindowsAuthOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !ch.Changed() || len(ch.Details) != 4 {
		t.Fatalf("first run: %v", ch)
	}
	got := ts.Host.IIS("Default Web Site/Microsoft-Server-ActiveSync")
	if got.Basic || !got.Windows || !got.KernelMode || !got.AppPoolCredentials || strings.Join(got.Providers, ",") != "Negotiate" {
		t.Fatalf("host state: %+v", got)
	}
	ch, err = s.ConfigureWindowsAuth(ctx, "", iis.ActiveSync, iis.WindowsAuthOptions{})
	if err != nil || ch.Changed() {
		t.Fatalf("second run: %v %v", ch, err)
	}
	// EWS keeping NTLM after Negotiate.
	ch, err = s.ConfigureWindowsAuth(ctx, "", iis.EWS, iis.WindowsAuthOptions{KeepNTLM: true})
	if err != nil || !ch.Changed() {
		t.Fatalf("EWS: %v %v", ch, err)
	}
	if p := ts.Host.IIS("Default Web Site/EWS").Providers; strings.Join(p, ",") != "Negotiate,NTLM" {
		t.Fatalf("EWS providers %v", p)
	}
}

// A failure half-way (providers cleared, Negotiate not yet added) is
// reported, and the next run finishes the job.
func TestConfigureResumesAfterFailure(t *testing.T) {
	s, ts := server(t)
	ctx := context.Background()
	ts.Host.FailOn("add-webconfigurationproperty", errors.New("Add-WebConfigurationProperty: Filename: applicationHost.config is locked"))
	_, err := s.ConfigureWindowsAuth(ctx, "", iis.ActiveSync, iis.WindowsAuthOptions{})
	var se *winrs.ScriptError
	if !errors.As(err, &se) || se.ExitCode != 1 || !strings.Contains(se.Message, "locked") {
		t.Fatalf("want the ScriptError, got %v", err)
	}
	var ie *iis.Error
	if !errors.As(err, &ie) || ie.Op != "configure Windows authentication" || ie.Object != "Default Web Site/Microsoft-Server-ActiveSync" || ie.Hint() == "" {
		t.Fatalf("want an *iis.Error with the step and a hint, got %#v", ie)
	}
	if p := ts.Host.IIS("Default Web Site/Microsoft-Server-ActiveSync").Providers; len(p) != 0 {
		t.Fatalf("expected the half-way state (no providers), got %v", p)
	}
	ch, err := s.ConfigureWindowsAuth(ctx, "", iis.ActiveSync, iis.WindowsAuthOptions{})
	if err != nil || !ch.Changed() {
		t.Fatalf("resume: %v %v", ch, err)
	}
	if p := ts.Host.IIS("Default Web Site/Microsoft-Server-ActiveSync").Providers; strings.Join(p, ",") != "Negotiate" {
		t.Fatalf("after resume: %v", p)
	}
}

func TestLocalGroup(t *testing.T) {
	s, ts := server(t)
	ctx := context.Background()
	ch, err := s.AddLocalGroupMember(ctx, iis.IISUsers, `CORP\svc_awseg`)
	if err != nil || !ch.Changed() {
		t.Fatalf("%v %v", ch, err)
	}
	ch, err = s.AddLocalGroupMember(ctx, iis.IISUsers, `corp\SVC_AWSEG`)
	if err != nil || ch.Changed() {
		t.Fatalf("second add: %v %v", ch, err)
	}
	m, err := s.LocalGroupMembers(ctx, iis.IISUsers)
	if err != nil || len(m) != 2 || m[1] != `CORP\svc_awseg` {
		t.Fatalf("%v %v", m, err)
	}
	if got := ts.Host.Members(iis.IISUsers); len(got) != 2 {
		t.Fatalf("host: %v", got)
	}
	// A one-member group is still a list (the -InputObject @() form).
	if m, err := s.LocalGroupMembers(ctx, "Administrators"); err != nil || len(m) != 1 {
		t.Fatalf("one member: %v %v", m, err)
	}
	var se *winrs.ScriptError
	if _, err := s.LocalGroupMembers(ctx, "NoSuchGroup"); !errors.As(err, &se) {
		t.Fatalf("missing group: %v", err)
	}
	if _, err := s.WindowsAuth(ctx, "", ""); !errors.Is(err, iis.ErrInvalid) {
		t.Fatalf("no virtual directory: %v", err)
	}
}

// Values with quotes cannot leave their literal: a hostile virtual
// directory name is only ever a (non-existent) location.
func TestHostileNames(t *testing.T) {
	s, ts := server(t)
	ctx := context.Background()
	_, err := s.WindowsAuth(ctx, "", "EWS'; Add-LocalGroupMember -Group 'Administrators' -Member 'evil'; '")
	var se *winrs.ScriptError
	if !errors.As(err, &se) || !strings.Contains(se.Message, "Unrecognized configuration path") {
		t.Fatalf("got %v", err)
	}
	_, err = s.AddLocalGroupMember(ctx, iis.IISUsers, "x\u2019; Remove-LocalGroupMember -Group 'Administrators' -Member 'CORP\\Administrator'; \u2019")
	if err != nil {
		t.Fatal(err)
	}
	if m := ts.Host.Members("Administrators"); len(m) != 1 {
		t.Fatalf("injection reached the host: %v", m)
	}
}

// Golden tests: the PowerShell the package sends, word for word.
func TestGoldenScripts(t *testing.T) {
	s, ts := server(t)
	ctx := context.Background()
	if _, err := s.ConfigureWindowsAuth(ctx, "", iis.ActiveSync, iis.WindowsAuthOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddLocalGroupMember(ctx, iis.IISUsers, `CORP\svc_awseg`); err != nil {
		t.Fatal(err)
	}
	names := []string{"read-activesync", "configure-activesync", "reread-activesync", "list-iis_iusrs", "add-iis_iusrs"}
	scripts := ts.Host.Scripts()
	if len(scripts) != len(names) {
		t.Fatalf("%d scripts", len(scripts))
	}
	for i, name := range names {
		path := filepath.Join("testdata", name+".ps1")
		if *update {
			os.WriteFile(path, []byte(scripts[i]), 0o644)
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test ./iis -run Golden -update)", err)
		}
		if string(want) != scripts[i] {
			t.Errorf("%s differs:\n--- want\n%s\n--- got\n%s", name, want, scripts[i])
		}
	}
}

// Extended Protection on ActiveSync and EWS: Require set, then nothing to
// do; flags compare as sets; a value IIS does not take is refused before
// anything is sent; the PowerShell is as the golden files say.
func TestConfigureExtendedProtection(t *testing.T) {
	s, ts := server(t)
	ctx := context.Background()
	before, err := s.ExtendedProtection(ctx, "", iis.ActiveSync)
	if err != nil || before.TokenChecking != "None" || before.Flags != "None" {
		t.Fatalf("model default: %+v %v", before, err)
	}
	ch, err := s.ConfigureExtendedProtection(ctx, "", iis.ActiveSync, iis.ExtendedProtection{TokenChecking: "require"})
	if err != nil || !ch.Changed() || len(ch.Details) != 1 || ch.Details[0] != "extendedProtection tokenChecking: None -> Require" {
		t.Fatalf("first run: %v %v", ch, err)
	}
	if got := ts.Host.IIS("Default Web Site/Microsoft-Server-ActiveSync"); got.TokenChecking != "Require" {
		t.Fatalf("host state: %+v", got)
	}
	if ch, err := s.ConfigureExtendedProtection(ctx, iis.DefaultSite, iis.ActiveSync, iis.ExtendedProtection{TokenChecking: "Require", Flags: "None"}); err != nil || ch.Changed() {
		t.Fatalf("second run: %v %v", ch, err)
	}
	want := iis.ExtendedProtection{TokenChecking: "Allow", Flags: "Proxy, NoServiceNameCheck"}
	if ch, err := s.ConfigureExtendedProtection(ctx, "", iis.EWS, want); err != nil || !ch.Changed() {
		t.Fatalf("EWS: %v %v", ch, err)
	}
	want.Flags = "noservicenamecheck,proxy"
	if ch, err := s.ConfigureExtendedProtection(ctx, "", iis.EWS, want); err != nil || ch.Changed() {
		t.Fatalf("EWS, flags in another order: %v %v", ch, err)
	}
	n := len(ts.Host.Scripts())
	for _, bad := range []iis.ExtendedProtection{{TokenChecking: "Always"}, {TokenChecking: "Require", Flags: "Proxy,Everything"}} {
		if _, err := s.ConfigureExtendedProtection(ctx, "", iis.ActiveSync, bad); !errors.Is(err, iis.ErrInvalid) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if len(ts.Host.Scripts()) != n {
		t.Error("an invalid value reached the server")
	}
	scripts := ts.Host.Scripts()
	// The first read, then ConfigureExtendedProtection's read and its change.
	for i, name := range map[int]string{0: "read-extendedprotection", 2: "configure-extendedprotection"} {
		path := filepath.Join("testdata", name+".ps1")
		if *update {
			os.WriteFile(path, []byte(scripts[i]), 0o644)
			continue
		}
		golden, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test ./iis -run ExtendedProtection -update)", err)
		}
		if string(golden) != scripts[i] {
			t.Errorf("%s differs:\n--- want\n%s\n--- got\n%s", name, golden, scripts[i])
		}
	}
}
