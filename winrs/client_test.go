package winrs_test

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segkcd/segkcd/internal/wsman"
	"github.com/segkcd/segkcd/winrs"
	"github.com/segkcd/segkcd/winrs/winrstest"
)

func testClient(t *testing.T) (*winrs.Client, *winrstest.Server) {
	t.Helper()
	srv := winrstest.StartTest(t, winrstest.NewHost("cas1"))
	c, err := winrs.New(srv.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	return c, srv
}

func TestRunOverWinRM(t *testing.T) {
	c, srv := testClient(t)
	ctx := context.Background()
	out, err := c.RunPowerShell(ctx, "$ErrorActionPreference = 'Stop'\nGet-LocalGroupMember -Group 'IIS_IUSRS' | ForEach-Object -MemberName Name | ConvertTo-Json -Compress")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != `"NT AUTHORITY\\IUSR"` {
		t.Fatalf("stdout %q", out)
	}
	// A failing cmdlet: exit 1, the CLIXML error made readable.
	_, err = c.RunPowerShell(ctx, "$ErrorActionPreference = 'Stop'\nAdd-LocalGroupMember -Group 'IIS_IUSRS' -Member 'NT AUTHORITY\\IUSR'")
	var se *winrs.ScriptError
	if !errors.As(err, &se) || se.ExitCode != 1 || !strings.Contains(se.Message, "already a member") || strings.Contains(se.Message, "_x000D_") {
		t.Fatalf("want a readable ScriptError, got %#v", err)
	}
	// Unknown cmdlets are refused loudly.
	_, err = c.RunPowerShell(ctx, "$ErrorActionPreference = 'Stop'\nInvoke-Expression 'calc'")
	if !errors.As(err, &se) || !strings.Contains(se.Message, "not recognized") {
		t.Fatalf("unknown cmdlet: %v", err)
	}
	if srv.Requests("Command") != 3 {
		t.Fatalf("commands %d", srv.Requests("Command"))
	}
}

// A script past cmd.exe's 8191-character limit is staged through a file,
// run, and the file removed.
func TestStagedScript(t *testing.T) {
	c, srv := testClient(t)
	var b strings.Builder
	b.WriteString("$ErrorActionPreference = 'Stop'\n")
	for i := 0; i < 300; i++ {
		b.WriteString("$x = 'a value with a quote '' and a unicode quote \u2019\u2019 in it, padding padding'\n")
	}
	b.WriteString("@($x) | ConvertTo-Json -Compress\n")
	script := b.String()
	if len(wsman.CommandLine(script)) <= wsman.MaxCommandLine {
		t.Fatal("test script too short to need staging")
	}
	out, err := c.RunPowerShell(context.Background(), script)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "a value with a quote ' and a unicode quote \u2019 in it") {
		t.Fatalf("stdout %q", out)
	}
	if n := srv.Requests("Command"); n < 4 {
		t.Fatalf("only %d commands: not staged", n)
	}
	if f := srv.Host.Files(); len(f) != 0 {
		t.Fatalf("staged file left behind: %v", f)
	}
}

func TestRefusesCleartextAndCancels(t *testing.T) {
	_, err := winrs.New(winrs.Config{Host: "h", Auth: winrs.Basic{User: "u", Password: "p"}})
	if err == nil || !strings.Contains(err.Error(), "in clear") {
		t.Fatalf("HTTP without AllowUnencrypted: %v", err)
	}
	c, _ := testClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.RunPowerShell(ctx, "$ErrorActionPreference = 'Stop'"); !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
}

// A script carrying a password: an error quoting the line shows no password.
func TestSecretRedacted(t *testing.T) {
	c, srv := testClient(t)
	const pw = "S3cret'pw\u2019x"
	srv.Host.FailOn("add-localgroupmember", errors.New("At line:2 char:1\n+ Add-LocalGroupMember -Group 'IIS_IUSRS' -Member "+wsman.MustQuote(pw)))
	_, err := c.RunPowerShell(context.Background(),
		"$ErrorActionPreference = 'Stop'\nAdd-LocalGroupMember -Group 'IIS_IUSRS' -Member "+wsman.MustQuote(pw), pw)
	if err == nil || strings.Contains(err.Error(), "S3cret") || !strings.Contains(err.Error(), "[REDACTED]") {
		t.Fatalf("error: %v", err)
	}
}

// Secrets travel on the command's standard input: no process command line
// (what Windows' process-creation auditing records) and no script holds
// them, staged scripts included.
func TestSecretsOnStdin(t *testing.T) {
	c, srv := testClient(t)
	const pw = "Pw-On-Stdin-4711'x"
	long := "$ErrorActionPreference = 'Stop'\n$pad = " + wsman.MustQuote(strings.Repeat("p", 9000)) + "\n"
	for _, script := range []string{"$ErrorActionPreference = 'Stop'\n", long} {
		out, err := c.RunPowerShell(context.Background(), script+"ConvertTo-Json -Compress -InputObject $secret0\n", pw, "second")
		if err != nil || !strings.Contains(out, `Pw-On-Stdin-4711'x`) {
			t.Fatalf("%q %v", out, err)
		}
	}
	for _, line := range srv.CommandLines() {
		script, _ := wsman.DecodeCommand(line[strings.LastIndex(line, " ")+1:])
		if strings.Contains(line, "4711") || strings.Contains(script, "4711") {
			t.Fatalf("the secret is on a command line: %s", script)
		}
	}
	for _, s := range srv.Host.Scripts() {
		if strings.Contains(s, "4711") {
			t.Fatalf("the secret is in a script: %s", s)
		}
	}
	if _, err := c.RunPowerShell(context.Background(), "$x = 1", "two\nlines"); err == nil {
		t.Fatal("a secret with a line break went out")
	}
}

// A cancelled run returns at once, stops the command and deletes its shell
// on the host (masterzen's loop waited forever and left both behind).
func TestCancelStopsAndCleansUp(t *testing.T) {
	c, srv := testClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.RunPowerShell(ctx, "$ErrorActionPreference = 'Stop'\nStart-Sleep -Seconds 30\n")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want DeadlineExceeded, got %v", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("returned after %v", d)
	}
	if n, r := srv.Shells(), srv.Running(); n != 0 || r != 0 {
		t.Fatalf("left on the host: %d shells, %d running commands", n, r)
	}
	if srv.Requests("Signal") != 1 || srv.Requests("Delete") != 1 {
		t.Fatalf("signal %d, delete %d", srv.Requests("Signal"), srv.Requests("Delete"))
	}
	// A finished run leaves nothing either.
	if _, err := c.RunPowerShell(context.Background(), "$ErrorActionPreference = 'Stop'\n"); err != nil || srv.Shells() != 0 {
		t.Fatalf("%v, %d shells", err, srv.Shells())
	}
}

// A configuration formats without its password or private key, whichever
// logon it holds.
func TestConfigFormat(t *testing.T) {
	pki, err := winrstest.NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.ClientCert("admin@corp.example")
	if err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprint(cert.PrivateKey.(*ecdsa.PrivateKey).D)
	for _, auth := range []winrs.Auth{winrs.Basic{User: "u", Password: "Sekr1t-Passw0rd!"},
		winrs.NTLM{User: "u", Password: "Sekr1t-Passw0rd!"}, winrs.Certificate{Certificate: cert}} {
		c := winrs.Config{Host: "h", Auth: auth}
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			for _, v := range []any{c, auth, &c} {
				if out := fmt.Sprintf(verb, v); strings.Contains(out, "Sekr1t") || strings.Contains(out, key) {
					t.Errorf("%s: %s", verb, out)
				}
			}
		}
	}
}
