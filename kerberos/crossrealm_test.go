package kerberos_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segkcd/segkcd/internal/testinfra/lab"
	"github.com/segkcd/segkcd/kerberos"
)

// Users of a trusting domain, on two Samba 4.22 DCs with a two-way forest
// trust (samba-tool domain trust create): S4U2Self for bob@OTHER goes
// through the trust in three exchanges (a TGT for OTHER from CORP's KDC,
// S4U2Self at OTHER's KDC, which answers with a referral back to CORP,
// and S4U2Self with that referral at CORP's KDC). Samba 4.22 does the
// first two and refuses the third with KDC_ERR_C_PRINCIPAL_UNKNOWN: its KDC
// looks bob up in its own database. MIT kvno -U bob@OTHER stops at the same
// answer. The test asserts exactly that, and the success path (the ticket
// speaks for bob@OTHER, S4U2Proxy follows) should Samba answer.
func TestCrossRealmS4U(t *testing.T) {
	theLab.Get(t) // the lab's prerequisites, and its CI rule (fail, never skip)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	corp, err := lab.Start(ctx, lab.Options{Trust: true, Realm: "CORPX.EXAMPLE.TEST", Domain: "CORPX", Host: "dcx1"})
	if err != nil {
		t.Fatal(err)
	}
	defer corp.Close()
	other, err := lab.Start(ctx, lab.Options{Trust: true, Realm: "OTHER.EXAMPLE.TEST", Domain: "OTHER", Host: "dcx2"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := corp.TrustWith(ctx, other); err != nil {
		t.Fatal(err)
	}
	const pw = "Xrealm-Passw0rd-1!"
	spn := "http/mail." + corp.DNSDomain
	if err := corp.ProvisionKCD(ctx, lab.KCD{ASA: "EXCHASA", ASAPassword: "Xrealm-Asa-Passw0rd-1!", Service: "svc_x", Password: pw, SPNs: []string{spn}}); err != nil {
		t.Fatal(err)
	}
	if out, err := other.SambaTool(ctx, "user", "create", "bob", "Bob-Xrealm-Passw0rd-1!"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	conf := filepath.Join(t.TempDir(), "krb5.conf")
	if err := lab.WriteKrb5Conf(conf, corp, other); err != nil {
		t.Fatal(err)
	}
	cfg, err := kerberos.LoadConfig(conf)
	if err != nil {
		t.Fatal(err)
	}
	svc := kerberos.NewWithPassword("svc_x", corp.Realm, pw, cfg)
	ev, err := svc.S4U2Self(ctx, "bob@"+other.Realm)
	var ke *kerberos.KDCError
	switch {
	case err == nil:
		if !ev.IsFor("bob@"+other.Realm) || !ev.Forwardable() {
			t.Fatalf("evidence %v", ev)
		}
		if _, err := svc.S4U2Proxy(ctx, ev, spn); err != nil {
			t.Fatal(err)
		}
		t.Log("Samba answers cross-realm S4U2Self")
	case errors.As(err, &ke) && ke.Code == kerberos.CodeCPrincipalUnknown &&
		strings.Contains(err.Error(), "with "+other.Realm+"'s referral") && strings.Contains(ke.KDC, corp.IP):
		t.Logf("Samba 4.22 stops at the third exchange: %v", err)
	default:
		t.Fatalf("cross-realm S4U2Self: %v", err)
	}

	// MIT's client, the independent peer, stops at the same answer.
	cc := filepath.Join(t.TempDir(), "svc.cc")
	env := append(os.Environ(), "KRB5_CONFIG="+conf, "KRB5CCNAME=FILE:"+cc)
	kinit := corp.Command(ctx, "x", "kinit", "-f", "svc_x@"+corp.Realm)
	kinit.Env, kinit.Stdin = env, strings.NewReader(pw+"\n")
	if out, err := kinit.CombinedOutput(); err != nil {
		t.Fatalf("kinit: %s", out)
	}
	kvno := corp.Command(ctx, "x", "kvno", "-U", "bob@"+other.Realm, "-P", spn)
	kvno.Env = env
	out, kerr := kvno.CombinedOutput()
	if (kerr == nil) != (err == nil) {
		t.Fatalf("MIT kvno -U bob@%s disagrees with us: %s (ours: %v)", other.Realm, out, err)
	}
	t.Logf("MIT kvno -U bob@%s: %s", other.Realm, strings.TrimSpace(string(out)))
}
