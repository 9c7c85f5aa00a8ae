package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/deploy"
	"github.com/segkcd/segkcd/examples/internal/siteconfig"
	"github.com/segkcd/segkcd/exchange"
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
	_, ts := casHost(t, "CAS1", dc1.Domain+`\GWASA$`, asaPassword)
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
		ASA: "GWASA", Servers: []siteconfig.Server{{Name: "CAS1"}},
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
	certFile, keyFile := f.deviceFiles(t, "alice")
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
	pr.done <- <-pr.done // seen; left for the cleanup's wait
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

// TestGatewayTwoReplicasOnTwoDCs (issue 28): two gateway processes with
// the same roll section, except that one tries DC1 first and the other
// DC2, start with the ASA's password due. Both claim on the PDC emulator:
// exactly one rolls, both report DC1 as where the roll writes, and the
// DCs and the server agree afterwards.
func TestGatewayTwoReplicasOnTwoDCs(t *testing.T) {
	dc1, dc2 := twoDCs.Get(t)
	f := newFixtureOn(t, dc1)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	conn, err := dc1.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const asaPW = "Gw-Two-Replicas-Asa-Passw0rd-0123456789!"
	if _, err := conn.CreateComputerAccount(ctx, ad.ComputerAccountRequest{Name: "GW2ASA"}); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ResetPassword(ctx, "GW2ASA$", asaPW); err != nil {
		t.Fatal(err)
	}
	if err := dc2.PullFrom(ctx, dc1); err != nil {
		t.Fatal(err)
	}
	kvno := func(dc *lab.Lab) int {
		c, err := dc.Dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		a, err := c.FindAccount(ctx, "GW2ASA$")
		if err != nil {
			t.Fatal(err)
		}
		return a.KeyVersion
	}
	before := kvno(dc1)
	h, ts := casHost(t, "CAS9", dc1.Domain+`\GW2ASA$`, asaPW)
	bindPW, _ := testpki.WriteFile(f.dir, "bind2.pw", []byte(dc1.AdminPassword+"\n"))
	winrmPW, _ := testpki.WriteFile(f.dir, "winrm2.pw", []byte(ts.Password+"\n"))
	procs := map[string]*process{}
	for _, r := range []struct {
		name  string
		order []*lab.Lab
	}{{"replica-a", []*lab.Lab{dc1, dc2}}, {"replica-b", []*lab.Lab{dc2, dc1}}} {
		c := f.conf
		c.Krb5Conf, c.KDCs = "", []string{dc1.KDCAddr(), dc2.KDCAddr()}
		c.Roll = &rollConfig{AD: siteconfig.AD{LDAPURL: "ldaps://" + r.order[0].HostName, LDAPURLs: []string{"ldaps://" + r.order[1].HostName},
			DNSServers: []string{r.order[0].IP, r.order[1].IP}, CAFile: dc1.CAFile,
			BindUser: dc1.AdminBindName(), BindPassword: siteconfig.Secret{File: bindPW}},
			ASA: "GW2ASA", Servers: []siteconfig.Server{{Name: "CAS9"}},
			WinRM: siteconfig.WinRM{Address: ts.Addr(), User: ts.User, Password: siteconfig.Secret{File: winrmPW}, TestHost: true},
			Every: "8s", Interval: "1s", Lease: "30s", Name: r.name, Replicas: []string{"replica-a", "replica-b"}}
		procs[r.name] = f.startCmd(t, exec.Command(f.bin, "-config", f.writeConfig(t, c)))
	}
	status := func(name string) deploy.RollStatus {
		code, body := f.admin(t, procs[name], "/v1/roll", true)
		var st deploy.RollStatus
		if code != 200 || json.Unmarshal([]byte(body), &st) != nil {
			t.Fatalf("/v1/roll of %s: %d %s", name, code, body)
		}
		return st
	}
	// Both check every second; the password set above is due 8 s after;
	// once one has rolled, the other sees it fresh (due again 8 s later).
	deadline := time.Now().Add(60 * time.Second)
	for {
		a, b := status("replica-a"), status("replica-b")
		if a.Rolls+b.Rolls > 0 && !a.LastCheck.IsZero() && !b.LastCheck.IsZero() && a.LastCheck.After(a.LastRoll) && b.LastCheck.After(b.LastRoll) {
			time.Sleep(3 * time.Second) // a few more checks each
			a, b = status("replica-a"), status("replica-b")
			if a.Rolls+b.Rolls != 1 {
				t.Fatalf("%d rolls: %+v\n%+v", a.Rolls+b.Rolls, a, b)
			}
			for _, st := range []deploy.RollStatus{a, b} {
				if st.PDC != dc1.HostName || !st.OK {
					t.Fatalf("%s: wrote to %q, ok %v: %+v", st.Replica, st.PDC, st.OK, st)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no roll within a minute:\n%+v\n%+v\n%s", a, b, procs["replica-b"].log())
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, pr := range procs {
		pr.cmd.Process.Kill()
		err := <-pr.done
		pr.done <- err
	}
	deadline = time.Now().Add(30 * time.Second)
	for kvno(dc1) != before+1 || kvno(dc2) != before+1 {
		if time.Now().After(deadline) {
			t.Fatalf("key versions %d and %d, want both %d", kvno(dc1), kvno(dc2), before+1)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if c := h.ASA("CAS9"); len(c) < 2 || c[0].Password == asaPW || c[1].Password != asaPW {
		t.Fatal("CAS9 does not hold the rolled password as Latest and the old one as Previous")
	}
	// The server holds what AD holds: -check, through either DC.
	c := f.conf
	c.Roll = &rollConfig{AD: siteconfig.AD{Domain: dc1.DNSDomain, DNSServers: []string{dc2.IP, dc1.IP}, CAFile: dc1.CAFile,
		BindUser: dc1.AdminBindName(), BindPassword: siteconfig.Secret{File: bindPW}},
		ASA: "GW2ASA", Servers: []siteconfig.Server{{Name: "CAS9"}},
		WinRM: siteconfig.WinRM{Address: ts.Addr(), User: ts.User, Password: siteconfig.Secret{File: winrmPW}, TestHost: true}}
	out, err := exec.Command(f.bin, "-check", "-config", f.writeConfig(t, c)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "roll: CAS9 [TEST HOST: modeled Windows, not a real Exchange]: decrypts (AD's password is its Latest)") {
		t.Fatalf("-check after the roll: %v\n%s", err, out)
	}
}

// casHost starts a WS-Man test host with the Exchange 2019 server name
// that holds user's ASA credential with password.
func casHost(t *testing.T, name, user, password string) (*winrstest.Host, *winrstest.Server) {
	t.Helper()
	h := winrstest.NewHost(strings.ToLower(name))
	h.AddExchangeServer(name, winrstest.Exchange2019)
	ts := winrstest.StartTest(t, h)
	sh, err := winrs.New(ts.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&exchange.Org{Shell: sh}).SetASA(context.Background(), name, user, password); err != nil {
		t.Fatal(err)
	}
	return h, ts
}
