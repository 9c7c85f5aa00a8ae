package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segkcd/segkcd/exchange"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
	"github.com/segkcd/segkcd/winrs"
	"github.com/segkcd/segkcd/winrs/winrstest"
)

var theLab lab.Shared

func TestMain(m *testing.M) { os.Exit(theLab.Run(m)) }

// The demo's promise: the first run creates, the second finds everything
// unchanged, and MIT kvno -U then gets alice a ticket to the mail SPN.
func TestProvisionTwice(t *testing.T) {
	l := theLab.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := config{url: l.LDAPSURL(), caFile: l.CAFile, serverName: l.HostName, bindUser: l.AdminBindName(),
		bindPassword: l.AdminPassword, asa: "EXCHASA", short: true, svc: "svc_awseg", svcPassword: "Test-Svc-Passw0rd!"}

	var first bytes.Buffer
	if err := run(ctx, &first, cfg); err != nil {
		t.Fatalf("%v\n%s", err, first.String())
	}
	if !strings.Contains(first.String(), "7 steps made changes") {
		t.Fatalf("first run:\n%s", first.String())
	}
	var second bytes.Buffer
	if err := run(ctx, &second, cfg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(second.String(), "all steps unchanged") || strings.Contains(second.String(), "created") ||
		strings.Contains(second.String(), "modified") {
		t.Fatalf("second run:\n%s", second.String())
	}
	for _, s := range []string{cfg.bindPassword, cfg.svcPassword} {
		if strings.Contains(first.String()+second.String(), s) {
			t.Fatal("a password is in the output")
		}
	}

	cmd := l.Command(ctx, "svc.cc", "kinit", "-f", "svc_awseg")
	cmd.Stdin = strings.NewReader(cfg.svcPassword + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kinit: %s", out)
	}
	if out, err := l.Command(ctx, "svc.cc", "kvno", "-U", "alice", "-P", "http/mail."+l.DNSDomain).CombinedOutput(); err != nil {
		t.Fatalf("kvno -U alice: %s", out)
	}

	// A mail SPN already held by another account stops the run with its holder named.
	bad := cfg
	bad.asa, bad.mail = "EXCHASA7", "mail."+l.DNSDomain
	var out bytes.Buffer
	err := run(ctx, &out, bad)
	if err == nil || !strings.Contains(err.Error(), "CN=EXCHASA,") {
		t.Fatalf("duplicate SPN: %v\n%s", err, out.String())
	}
}

// With a WinRM target (the WS-Man test host): the Exchange roll and the IIS
// steps run between the AD steps, and a second run changes nothing.
func TestProvisionWithTestHost(t *testing.T) {
	l := theLab.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := winrstest.NewHost("cas1")
	h.AddExchangeServer("CAS1", winrstest.Exchange2019)
	h.AddExchangeServer("CAS2", winrstest.Exchange2013)
	// As the demo's host: only sealed NTLM on plain HTTP.
	ts, err := winrstest.StartWith(h, winrstest.Options{User: l.AdminBindName(), Password: "Winrm-Passw0rd!"})
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	cfg := config{url: l.LDAPSURL(), caFile: l.CAFile, serverName: l.HostName, bindUser: l.AdminBindName(),
		bindPassword: l.AdminPassword, asa: "EXCHASB", mail: "mailb." + l.DNSDomain, short: false, svc: "svc_awsegb",
		svcPassword: "Test-Svc-Passw0rd!", winrmAddr: ts.Addr(), winrmPassword: "Winrm-Passw0rd!", testHost: true,
		servers: []string{"CAS1", "CAS2"}}
	var first bytes.Buffer
	if err := run(ctx, &first, cfg); err != nil {
		t.Fatalf("%v\n%s", err, first.String())
	}
	out := first.String()
	for _, want := range []string{"modified   ASA credential on CAS1, CAS2 [TEST HOST", "TEST HOST: modeled Windows, not a real Exchange",
		"modified   Windows authentication on Default Web Site/Microsoft-Server-ActiveSync", "modified   " + l.Domain + `\svc_awsegb in IIS_IUSRS`} {
		if !strings.Contains(out, want) {
			t.Fatalf("first run lacks %q:\n%s", want, out)
		}
	}
	// Order of DESIGN section 1: Exchange before the mail SPN, IIS last.
	if strings.Index(out, "2. Exchange") > strings.Index(out, "3. Mail SPNs") || strings.Index(out, "5. IIS") < strings.Index(out, "4. Gateway") {
		t.Fatalf("steps out of order:\n%s", out)
	}
	if len(h.ASA("CAS2")) != 1 || h.IIS("Default Web Site/EWS").Providers[0] != "Negotiate" {
		t.Fatal("host state not changed")
	}
	var second bytes.Buffer
	if err := run(ctx, &second, cfg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(second.String(), "all steps unchanged") {
		t.Fatalf("second run:\n%s", second.String())
	}
	if strings.Contains(out+second.String(), "Winrm-Passw0rd!") {
		t.Fatal("WinRM password in the output")
	}
	// A server whose credential is not AD's (here: someone set another
	// password on CAS2, the same user name) is noticed, and rolled.
	sh, err := winrs.New(ts.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&exchange.Org{Shell: sh}).SetASA(ctx, "CAS2", h.ASA("CAS2")[0].UserName, "Stale-Passw0rd-123!"); err != nil {
		t.Fatal(err)
	}
	var third bytes.Buffer
	if err := run(ctx, &third, cfg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(third.String(), "CAS2: decrypts (AD's password is its Previous)") || strings.Contains(third.String(), "all steps unchanged") {
		t.Fatalf("third run did not notice CAS2:\n%s", third.String())
	}
	if h.ASA("CAS2")[0].Password != h.ASA("CAS1")[0].Password {
		t.Fatal("CAS2 not rolled")
	}
}
