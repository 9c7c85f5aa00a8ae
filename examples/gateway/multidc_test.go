package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segkcd/segkcd/exchange"
	"github.com/segkcd/segkcd/internal/siteconfig"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
	"github.com/segkcd/segkcd/internal/testinfra/testpki"
	"github.com/segkcd/segkcd/winrs"
	"github.com/segkcd/segkcd/winrs/winrstest"
)

// TestGatewayTwoDCs (issue 28): a gateway whose KDCs are both DCs' and
// whose roll section finds the DCs in the domain's DNS (Samba's). -check
// prints a line per DC: reachable and bound, its site, the PDC emulator
// role, its view of the ASA. With DC1 killed, devices are served (a new
// user's S4U goes to DC2's KDC) and -check says DC1, the PDC emulator, is
// unreachable; with DC1 hung (SIGSTOP), a new user's S4U fails over
// within the ticket timeout.
func TestGatewayTwoDCs(t *testing.T) {
	dc1, dc2 := twoDCs.Get(t)
	f := newFixtureOn(t, dc1)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// What newFixtureOn made on DC1 reaches DC2 now rather than in a second.
	if err := dc2.PullFrom(ctx, dc1); err != nil {
		t.Fatal(err)
	}
	f.conf.Krb5Conf, f.conf.KDCs = "", []string{dc1.KDCAddr(), dc2.KDCAddr()}

	// CAS1, on a WS-Man test host, holds the ASA's password.
	h := winrstest.NewHost("cas1")
	h.AddExchangeServer("CAS1", winrstest.Exchange2019)
	ts := winrstest.StartTest(t, h)
	sh, err := winrs.New(ts.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&exchange.Org{Shell: sh}).SetASA(ctx, "CAS1", dc1.Domain+`\EXCHASA$`, asaPassword); err != nil {
		t.Fatal(err)
	}
	write := func(name, v string) string {
		p, err := testpki.WriteFile(f.dir, name, []byte(v+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	c := f.conf
	c.Roll = &rollConfig{AD: siteconfig.AD{Domain: dc1.DNSDomain, DNSServers: []string{dc1.IP, dc2.IP}, CAFile: dc1.CAFile,
		BindUser: dc1.AdminBindName(), BindPassword: siteconfig.Secret{File: write("bind.pw", dc1.AdminPassword)}},
		ASA: "EXCHASA", Servers: []siteconfig.Server{{Name: "CAS1"}},
		WinRM: siteconfig.WinRM{Address: ts.Addr(), User: ts.User, Password: siteconfig.Secret{File: write("winrm.pw", ts.Password)}, TestHost: true}}
	path := f.writeConfig(t, c)
	check := func() string {
		out, err := exec.Command(f.bin, "-check", "-config", path).CombinedOutput()
		if err != nil {
			t.Fatalf("-check: %v\n%s", err, out)
		}
		return string(out)
	}
	role := " (site Default-First-Site-Name, PDC emulator)"
	out := check()
	for _, want := range []string{"ok   roll: DC " + dc1.HostName + role + ": reachable and bound; ASA key version",
		"ok   roll: DC " + dc2.HostName + " (site Default-First-Site-Name): reachable and bound; ASA key version",
		"ok   roll: CAS1 [TEST HOST"} {
		if !strings.Contains(out, want) {
			t.Fatalf("-check lacks %q:\n%s", want, out)
		}
	}

	pr := f.startCmd(t, exec.Command(f.bin, "-config", path))
	alice, err := f.deviceCert(t, "alice")
	if err != nil {
		t.Fatal(err)
	}
	certFile, _ := testpki.WriteFile(f.dir, "alice.crt", alice.CertPEM)
	keyFile, _ := testpki.WriteFile(f.dir, "alice.key", alice.KeyPEM)
	if code, body := f.curl(t, pr, "Cmd=FolderSync&User=alice&DeviceId=TWODC1&DeviceType=curl", "--cert", certFile, "--key", keyFile); code != 200 || body != "alice" {
		t.Fatalf("alice with both DCs: %d %q", code, body)
	}

	if err := dc1.Kill(); err != nil {
		t.Fatal(err)
	}
	restart := true
	defer func() {
		if restart {
			if err := dc1.Restart(context.Background()); err != nil {
				t.Error(err)
			}
		}
	}()
	// bob is new to the gateway: his S4U goes to a KDC now.
	netrc, _ := testpki.WriteFile(f.dir, "netrc", []byte(fmt.Sprintf("machine 127.0.0.1 login bob password %s\n", lab.UserPassword)))
	t0 := time.Now()
	if code, body := f.curl(t, pr, "Cmd=Sync&User=bob&DeviceId=TWODC2&DeviceType=curl", "--netrc-file", netrc); code != 200 || body != "bob" {
		t.Fatalf("bob with DC1 dead: %d %q\n%s", code, body, pr.log())
	}
	t.Logf("a new user's login and S4U with DC1 dead: %s", time.Since(t0).Round(time.Millisecond))
	out = check()
	for _, want := range []string{"WARN roll: DC " + dc1.HostName + role + ": unreachable",
		"hint: the roll writes only on the PDC emulator",
		"ok   roll: DC " + dc2.HostName + " (site Default-First-Site-Name): reachable and bound",
		"ok   roll: AD: bound to ldaps://" + dc2.HostName} {
		if !strings.Contains(out, want) {
			t.Fatalf("-check with DC1 dead lacks %q:\n%s", want, out)
		}
	}

	// DC1 back, then hung: a fresh gateway (nothing cached, no KDC known
	// bad) logs alice in through DC2 within the ticket timeout.
	restart = false
	if err := dc1.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	pr.cmd.Process.Kill()
	err = <-pr.done
	pr.done <- err // for the cleanup's wait
	pr2 := f.startCmd(t, exec.Command(f.bin, "-config", path))
	if err := dc1.Pause(); err != nil {
		t.Fatal(err)
	}
	defer dc1.Resume()
	t0 = time.Now()
	code, body := f.curl(t, pr2, "Cmd=FolderSync&User=alice&DeviceId=TWODC3&DeviceType=curl", "--cert", certFile, "--key", keyFile)
	took := time.Since(t0)
	if code != 200 || body != "alice" {
		t.Fatalf("alice with DC1 hung: %d %q after %s\n%s", code, body, took, pr2.log())
	}
	t.Logf("a new user's S4U with DC1 hung: %s (ticket timeout 15s)", took.Round(time.Millisecond))
	if err := dc1.Resume(); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(filepath.Join(f.dir, "netrc"))
}
