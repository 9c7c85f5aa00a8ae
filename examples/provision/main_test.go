package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/examples/internal/siteconfig"
	"github.com/segkcd/segkcd/exchange"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
	"github.com/segkcd/segkcd/winrs"
	"github.com/segkcd/segkcd/winrs/winrstest"
)

var theLab lab.Shared

// twoDCs is a domain of two DCs (issue 28).
var twoDCs lab.SharedDCs

func TestMain(m *testing.M) {
	code := theLab.Run(m)
	twoDCs.Close()
	os.Exit(code)
}

const (
	winrmPW = "Winrm-Passw0rd!"
	svcPW   = "Test-Svc-Passw0rd!"
)

// testConfig is a deployment on the lab with WS-Man test hosts as the demo
// runs them: CAS1's holds the Exchange organisation (CAS1 2019, CAS2 2013)
// and CAS1's IIS, CAS2's its IIS.
func testConfig(t *testing.T, asa, mail, svc string) (*config, *winrstest.Host, *winrstest.Server) {
	return testConfigOn(t, theLab.Get(t), asa, mail, svc)
}

// testConfigOn is testConfig on the domain of the DC l.
func testConfigOn(t *testing.T, l *lab.Lab, asa, mail, svc string) (*config, *winrstest.Host, *winrstest.Server) {
	h := winrstest.NewHost("cas1")
	h.AddExchangeServer("CAS1", winrstest.Exchange2019)
	h.AddExchangeServer("CAS2", winrstest.Exchange2013)
	// As the demo's host: only sealed NTLM on plain HTTP.
	ts, err := winrstest.StartWith(h, winrstest.Options{User: l.AdminBindName(), Password: winrmPW})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ts.Close() })
	// CAS2's own IIS, on a host of its own.
	ts2, err := winrstest.StartWith(winrstest.NewHost("cas2"), winrstest.Options{User: l.AdminBindName(), Password: winrmPW})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ts2.Close() })
	t.Setenv("TEST_BIND_PW", l.AdminPassword)
	t.Setenv("TEST_SVC_PW", svcPW)
	pwFile := filepath.Join(t.TempDir(), "winrm.pw")
	if err := os.WriteFile(pwFile, []byte(winrmPW+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &config{AD: siteconfig.AD{LDAPURL: l.LDAPSURL(), CAFile: l.CAFile, ServerName: l.HostName, BindUser: l.AdminBindName(),
		BindPassword: siteconfig.Secret{Env: "TEST_BIND_PW"}, Krb5Conf: l.Krb5Conf}, ASA: asa, MailHosts: []string{mail},
		Servers:        []siteconfig.Server{{Name: "CAS1", Version: "2019/SE"}, {Name: "CAS2", Version: "2013", WinRM: ts2.Addr()}},
		WinRM:          siteconfig.WinRM{Address: ts.Addr(), Password: siteconfig.Secret{File: pwFile}, TestHost: true},
		ServiceAccount: svc, ServicePassword: siteconfig.Secret{Env: "TEST_SVC_PW"}, EWS: true, TestUser: "alice"}
	return c, h, ts
}

func runCmd(t *testing.T, c *config, cmd string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, &out, c, cmd); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out.String())
	}
	return out.String()
}

// The demo's promise: plan lists the steps and writes nothing; apply makes
// them in the seed's order, labelled where a test host is involved; then
// plan and apply have nothing to do, verify proves the chain, and MIT's
// kvno -U, an independent client, gets alice a ticket to the mail SPN as
// the gateway's account.
func TestPlanApplyVerify(t *testing.T) {
	l := theLab.Get(t)
	c, h, _ := testConfig(t, "PROVASA", "mail-prov."+l.DNSDomain, "svc_prov")
	plan := runCmd(t, c, "plan")
	for _, want := range []string{"1. Alternate Service Account", "created    create computer account PROVASA$",
		"CAS2: Exchange 2013", "[TEST HOST: modeled Windows, not a real Exchange]", "17 steps to apply",
		"RC4 cut-off (CVE-2026-20833): no account on the path is exposed"} {
		if !strings.Contains(plan, want) {
			t.Fatalf("plan lacks %q:\n%s", want, plan)
		}
	}
	if len(h.ASA("CAS1")) != 0 {
		t.Fatal("plan wrote to the host")
	}
	first := runCmd(t, c, "apply")
	if !strings.Contains(first, "17 steps made changes") ||
		strings.Index(first, "2. ASA credential") > strings.Index(first, "3. mail SPNs") ||
		strings.Index(first, "5. IIS") < strings.Index(first, "4. gateway") {
		t.Fatalf("first apply:\n%s", first)
	}
	if again := runCmd(t, c, "plan"); !strings.Contains(again, "nothing to do") || strings.Contains(again, "created") || strings.Contains(again, "modified") {
		t.Fatalf("second plan:\n%s", again)
	}
	second := runCmd(t, c, "apply")
	if !strings.Contains(second, "nothing to do") {
		t.Fatalf("second apply:\n%s", second)
	}
	verify := runCmd(t, c, "verify")
	if !strings.Contains(verify, "accepts it as alice@"+l.Realm+", bound to a TLS channel with bindings required") {
		t.Fatalf("verify:\n%s", verify)
	}
	for _, s := range []string{l.AdminPassword, svcPW, winrmPW} {
		if strings.Contains(plan+first+second+verify, s) {
			t.Fatal("a password is in the output")
		}
	}
	ctx := context.Background()
	cmd := l.Command(ctx, "svc.cc", "kinit", "-f", "svc_prov")
	cmd.Stdin = strings.NewReader(svcPW + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kinit: %s", out)
	}
	if out, err := l.Command(ctx, "svc.cc", "kvno", "-U", "alice", "-P", "http/mail-prov."+l.DNSDomain).CombinedOutput(); err != nil {
		t.Fatalf("kvno -U alice: %s", out)
	}

	// A server whose credential is not AD's (someone set another password
	// on CAS2 under the same user name) is noticed by plan, and rolled.
	sh, err := winrs.New(winrs.Config{Host: "127.0.0.1", Port: mustPort(t, c.WinRM.Address), Auth: winrs.NTLM{User: l.AdminBindName(), Password: winrmPW}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&exchange.Org{Shell: sh}).SetASA(ctx, "CAS2", h.ASA("CAS2")[0].UserName, "Stale-Passw0rd-123!"); err != nil {
		t.Fatal(err)
	}
	if p := runCmd(t, c, "plan"); !strings.Contains(p, "CAS2: decrypts (AD's password is its Previous)") || !strings.Contains(p, "1 steps to apply") {
		t.Fatalf("plan did not notice CAS2:\n%s", p)
	}
	runCmd(t, c, "apply")
	if h.ASA("CAS2")[0].Password != h.ASA("CAS1")[0].Password {
		t.Fatal("CAS2 not rolled")
	}

	// A mail SPN already held by another account stops apply, naming its holder.
	dup, _, _ := testConfig(t, "PROVASA7", "mail-prov."+l.DNSDomain, "svc_prov7")
	var out bytes.Buffer
	err = run(ctx, &out, dup, "apply")
	if !errors.Is(err, ad.ErrDuplicateSPN) || !strings.Contains(err.Error(), "CN=PROVASA,") {
		t.Fatalf("duplicate SPN: %v\n%s", err, out.String())
	}
}

// TestPlanWithFirstDCDead (issue 28): ldap_url names a DC that is down;
// plan reads from the next one in ldap_urls.
func TestPlanWithFirstDCDead(t *testing.T) {
	l := theLab.Get(t)
	c, _, _ := testConfig(t, "PROVASA9", "mail9-prov."+l.DNSDomain, "svc_prov9")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "ldaps://" + ln.Addr().String()
	ln.Close()
	c.LDAPURLs, c.LDAPURL = []string{c.LDAPURL}, dead
	if plan := runCmd(t, c, "plan"); !strings.Contains(plan, "steps to apply") {
		t.Fatalf("plan with the first DC dead:\n%s", plan)
	}
}

// Configuration errors say what is wrong; a secret's value never shows.
func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"ldap_url": "ldaps://dc", "bind_pasword": {"env": "X"}}`), 0o600)
	if _, err := load(bad); err == nil || !strings.Contains(err.Error(), "bind_pasword") {
		t.Fatalf("unknown field: %v", err)
	}
	t.Setenv("EMPTY_PW", "")
	c := &config{AD: siteconfig.AD{LDAPURL: "ldaps://127.0.0.1:1", BindUser: "admin", BindPassword: siteconfig.Secret{Env: "EMPTY_PW"}},
		ServiceAccount: "svc", Servers: []siteconfig.Server{{Name: "CAS1"}}, ServicePassword: siteconfig.Secret{Env: "SVC_PW"}}
	t.Setenv("SVC_PW", "Some-Passw0rd!")
	if err := run(context.Background(), io.Discard, c, "plan"); err == nil || !strings.Contains(err.Error(), "bind_password: $EMPTY_PW is empty") {
		t.Fatalf("empty password: %v", err)
	}
	if err := run(context.Background(), io.Discard, c, "destroy"); err == nil || !strings.Contains(err.Error(), "plan, apply or verify") {
		t.Fatalf("unknown command: %v", err)
	}
}

func mustPort(t *testing.T, addr string) int {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTwoDCs (issue 28): the DCs and KDCs are found in the domain's DNS
// (Samba's, on the DCs: domain and dns_servers, no ldap_url). With DC1,
// the PDC emulator, killed, plan and verify work through DC2's LDAP and
// KDC, and verify shows DC1 unreachable; an apply that has a roll to make
// waits for the PDC emulator and says so.
func TestTwoDCs(t *testing.T) {
	dc1, dc2 := twoDCs.Get(t)
	c, h, ts := testConfigOn(t, dc1, "PROVASA2", "mail2."+dc1.DNSDomain, "svc_two")
	c.AD = siteconfig.AD{Domain: dc1.DNSDomain, DNSServers: []string{dc1.IP, dc2.IP}, CAFile: dc1.CAFile,
		BindUser: dc1.AdminBindName(), BindPassword: siteconfig.Secret{Env: "TEST_BIND_PW"}}
	runCmd(t, c, "apply")
	// The Locator drew either DC for apply, and may draw the other for
	// verify: replicate now rather than let verify see the lag (it would
	// rightly find steps still to apply on the DC that has not caught up).
	if err := dc1.PullFrom(context.Background(), dc2); err != nil {
		t.Fatal(err)
	}
	if err := dc2.PullFrom(context.Background(), dc1); err != nil {
		t.Fatal(err)
	}
	verify := runCmd(t, c, "verify")
	for _, want := range []string{"DC " + dc1.HostName + " (site Default-First-Site-Name, PDC emulator): ASA key version",
		"DC " + dc2.HostName + " (site Default-First-Site-Name): ASA key version"} {
		if !strings.Contains(verify, want) {
			t.Fatalf("verify lacks %q:\n%s", want, verify)
		}
	}
	if err := dc1.Kill(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := dc1.Restart(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	plan := runCmd(t, c, "plan")
	if !strings.Contains(plan, "DC "+dc2.HostName) || !strings.Contains(plan, "nothing to do") {
		t.Fatalf("plan with DC1 dead:\n%s", plan)
	}
	verify = runCmd(t, c, "verify")
	if !strings.Contains(verify, "DC "+dc1.HostName+" (site Default-First-Site-Name, PDC emulator): unreachable") ||
		!strings.Contains(verify, "accepts it as alice@"+dc1.Realm) {
		t.Fatalf("verify with DC1 dead:\n%s", verify)
	}
	// A stale credential on CAS2 makes a roll to do; it waits for DC1.
	sh, err := winrs.New(winrs.Config{Host: "127.0.0.1", Port: mustPort(t, ts.Addr()), Auth: winrs.NTLM{User: dc1.AdminBindName(), Password: winrmPW}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&exchange.Org{Shell: sh}).SetASA(context.Background(), "CAS2", h.ASA("CAS2")[0].UserName, "Stale-Passw0rd-123!"); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err = run(context.Background(), &out, c, "apply")
	if !errors.Is(err, ad.ErrPDCUnavailable) || !strings.Contains(err.Error(), dc1.HostName) {
		t.Fatalf("apply with the PDC emulator dead: %v\n%s", err, out.String())
	}
}
