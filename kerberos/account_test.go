package kerberos_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
	"github.com/segkcd/segkcd/kerberos"
)

// TestAccount resolves names to accounts on the lab as the KDC maps them: a
// UPN whose prefix is another account's sAMAccountName, a UPN whose prefix is
// no account's, and case variants, each read from the S4U2Self ticket's PAC.
func TestAccount(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	c, err := e.lab.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// xsmith holds the UPN alice2@example.com (an alternative suffix); alice2
	// is another account. jdoe's UPN is j.doe@<domain>.
	for _, u := range [][2]string{{"acc_xsmith", "acc_alice2@example.com"}, {"acc_alice2", "acc_alice2@" + e.lab.DNSDomain},
		{"acc_jdoe", "acc_j.doe@" + e.lab.DNSDomain}} {
		if _, err := c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: u[0], Password: lab.UserPassword,
			UserPrincipalName: u[1], PasswordNeverExpires: true}); err != nil {
			t.Fatal(err)
		}
	}
	svc := kerberos.NewWithPassword(svcName, e.lab.Realm, svcPassword, e.cfg)
	for _, tc := range []struct{ name, account, upn string }{
		{"acc_alice2@example.com", "acc_xsmith", "acc_alice2@example.com"},
		{"acc_alice2", "acc_alice2", "acc_alice2@" + e.lab.DNSDomain},
		{"acc_j.doe@" + e.lab.DNSDomain, "acc_jdoe", "acc_j.doe@" + e.lab.DNSDomain},
		{"ACC_JDOE", "acc_jdoe", "acc_j.doe@" + e.lab.DNSDomain},
		{"ACC_XSMITH@" + e.lab.Realm, "acc_xsmith", "acc_alice2@example.com"},
		{"ALICE", "alice", "alice@" + e.lab.DNSDomain},
		{"carol", "carol", "carol@" + e.lab.DNSDomain}, // sensitive: resolves all the same
	} {
		a, err := svc.Account(ctx, tc.name)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if a.Name != tc.account || a.User != tc.account || a.UPN != tc.upn || a.Realm != e.lab.Realm ||
			!strings.HasPrefix(a.SID, "S-1-5-21-") {
			t.Errorf("%s: %+v, want account %s with UPN %s", tc.name, a, tc.account, tc.upn)
		}
	}
	if _, err := svc.Account(ctx, "nobody@example.com"); !errors.Is(err, kerberos.ErrClientUnknown) {
		t.Errorf("unknown UPN: %v", err)
	}
	if _, err := svc.Account(ctx, "dave"); !errors.Is(err, kerberos.ErrPolicy) {
		t.Errorf("disabled account: %v", err)
	}
	// A keytab client reads the PAC with the keytab's key; a ccache client has
	// no key to read it with.
	kt := exportKeytab(t, e, svcName)
	ktc := kerberos.NewWithKeytab(svcName, e.lab.Realm, kt, e.cfg)
	if a, err := ktc.Account(ctx, "acc_alice2@example.com"); err != nil || a.Name != "acc_xsmith" {
		t.Errorf("keytab client: %+v %v", a, err)
	}
	cc := "account-test.ccache"
	kinit := e.lab.Command(ctx, cc, "kinit", "-f", svcName)
	kinit.Stdin = strings.NewReader(svcPassword + "\n")
	if out, err := kinit.CombinedOutput(); err != nil {
		t.Fatalf("kinit: %v %s", err, out)
	}
	ccache, err := kerberos.LoadCCache(filepath.Join(e.lab.Dir, cc))
	if err != nil {
		t.Fatal(err)
	}
	ccc, err := kerberos.NewFromCCache(ccache, e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ccc.Account(ctx, "alice"); !errors.Is(err, kerberos.ErrNoServiceKey) {
		t.Errorf("ccache client: %v", err)
	}
	// MIT's kinit agrees with the mapping: canonicalized, the UPN's TGT is xsmith's.
	out, err := e.lab.Command(ctx, cc, "sh", "-c", "echo '"+lab.UserPassword+"' | kinit -E -C acc_alice2@example.com && klist").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Default principal: acc_xsmith@"+e.lab.Realm) {
		t.Errorf("kinit -E -C acc_alice2@example.com: %v\n%s", err, out)
	}
}

// namePairs are spellings that Unicode's simple upper-casing joins and the
// lab's Samba DC keeps apart as two accounts (same: false), and case
// partners that are one account (same: true).
var namePairs = []struct {
	a, b string
	same bool
}{
	{"sam", "\u017fam", false},    // long s: ToUpper gives S
	{"tim", "t\u0131m", false},    // dotless i: ToUpper gives I
	{"\u00b5u", "\u03bcu", false}, // micro sign and Greek mu: both give Greek M
	{"\u01c5x", "\u01c4x", false}, // title-case DZ and DZ
	{"\u1e9bq", "\u1e61q", false}, // long s with dot and s with dot
	{"kelly", "\u212aelly", false},
	{"sam", "SAM", true},
	{"\u03bcu", "\u039cU", true},
	{"\u01c6x", "\u01c4X", true},
}

func TestEqualNamesAsAD(t *testing.T) {
	for _, p := range namePairs {
		if got := kerberos.EqualNames(p.a, p.b); got != p.same {
			t.Errorf("EqualNames(%q, %q) = %v", p.a, p.b, got)
		}
		if got := kerberos.UpperName(p.a) == kerberos.UpperName(p.b); got != p.same {
			t.Errorf("UpperName(%q) = %q, UpperName(%q) = %q", p.a, kerberos.UpperName(p.a), p.b, kerberos.UpperName(p.b))
		}
	}
	if kerberos.EqualNames("a\xff", "a\xfe") || kerberos.UpperName("a\xff") != "A\xff" {
		t.Error("invalid bytes compared as U+FFFD")
	}
}

// TestNamesAsTheLabKeepsThem creates both accounts of each pair on the lab
// and resolves every spelling: the KDC keeps apart what EqualNames keeps
// apart, and joins case partners.
func TestNamesAsTheLabKeepsThem(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	c, err := e.lab.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	svc := e.client()
	for i, p := range namePairs {
		a, b := fmt.Sprintf("np%d%s", i, p.a), fmt.Sprintf("NP%d%s", i, p.b)
		if p.same {
			if _, err := c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: a, Password: lab.UserPassword, PasswordNeverExpires: true}); err != nil {
				t.Fatal(err)
			}
		} else {
			for _, n := range []string{a, strings.ToLower(b[:2]) + b[2:]} {
				if _, err := c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: n, Password: lab.UserPassword, PasswordNeverExpires: true}); err != nil {
					t.Fatalf("%q: %v", n, err)
				}
			}
		}
		ra, err := svc.Account(ctx, a)
		if err != nil {
			t.Fatalf("%q: %v", a, err)
		}
		rb, err := svc.Account(ctx, b)
		if err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		if (ra.SID == rb.SID) != p.same || kerberos.EqualNames(a, b) != p.same {
			t.Errorf("%q is %s, %q is %s; EqualNames says %v", a, ra.SID, b, rb.SID, kerberos.EqualNames(a, b))
		}
	}
}
