package ad_test

import (
	"strings"
	"testing"

	"github.com/segkcd/segkcd/ad"
)

// TestKCDChain provisions KCD with the ad package and proves it with MIT
// Kerberos: kinit -f as the service account, then kvno -U user -P spn
// (S4U2Self + S4U2Proxy). Then it takes pieces away and sees the KDC refuse.
func TestKCDChain(t *testing.T) {
	l, c, ctx := dial(t)
	mail := "mail9-ad." + l.DNSDomain
	spn := "http/" + mail
	const svc, svcPW = "svc_kcd", "Svc-Passw0rd-Kcd!"

	must(t)(c.CreateComputerAccount(ctx, ad.ComputerAccountRequest{Name: "ADASA9"}))
	must(t)(c.SetSPN(ctx, "ADASA9", spn))
	must(t)(c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: svc, Password: svcPW, PasswordNeverExpires: true}))
	must(t)(c.SetSPN(ctx, svc, "HTTP/"+svc))
	must(t)(c.SetProtocolTransition(ctx, svc, true))
	must(t)(c.AddAllowedToDelegateTo(ctx, svc, spn, "http/mail9-ad"))

	n := 0
	// s4u runs kinit -f for the service account in a fresh ccache, then kvno -U -P.
	s4u := func(user string) (string, error) {
		t.Helper()
		n++
		cc := "kcd" + strings.Repeat("x", n) + ".cc"
		if err := kinit(t, l, cc, svc, svcPW, "-f"); err != nil {
			t.Fatalf("kinit -f %s: %v", svc, err)
		}
		out, err := l.Command(ctx, cc, "kvno", "-U", user, "-P", spn).CombinedOutput()
		if err != nil {
			return string(out), err
		}
		klist, _ := l.Command(ctx, cc, "klist", "-f").CombinedOutput()
		return string(klist), nil
	}

	out, err := s4u("alice")
	if err != nil {
		t.Fatalf("kvno -U alice -P %s: %v\n%s", spn, err, out)
	}
	if !strings.Contains(out, spn+"@"+l.Realm) || !strings.Contains(out, "for client alice@"+l.Realm) {
		t.Fatalf("no delegated ticket for alice:\n%s", out)
	}

	// carol is sensitive: the evidence ticket is not forwardable, S4U2Proxy fails.
	if out, err := s4u("carol"); err == nil {
		t.Fatalf("S4U2Proxy for NOT_DELEGATED carol succeeded:\n%s", out)
	}
	// dave is disabled.
	if out, err := s4u("dave"); err == nil {
		t.Fatalf("S4U for disabled dave succeeded:\n%s", out)
	}
	// bob without the fixture's special flags works too.
	if out, err := s4u("bob"); err != nil {
		t.Fatalf("bob: %s", out)
	}

	// Without the delegation target, the KDC refuses (KDC_ERR_BADOPTION).
	must(t)(c.RemoveAllowedToDelegateTo(ctx, svc, spn))
	if out, err := s4u("alice"); err == nil || !strings.Contains(out, "can't fulfill requested option") {
		t.Fatalf("S4U2Proxy without msDS-AllowedToDelegateTo: %v\n%s", err, out)
	}
	must(t)(c.AddAllowedToDelegateTo(ctx, svc, spn))
	if out, err := s4u("alice"); err != nil {
		t.Fatalf("after re-adding the target: %s", out)
	}

	// Without the SPN on the ASA, the target is unknown (KDC_ERR_S_PRINCIPAL_UNKNOWN).
	must(t)(c.RemoveSPN(ctx, "ADASA9", spn))
	if out, err := s4u("alice"); err == nil || !strings.Contains(out, "not found in Kerberos database") {
		t.Fatalf("S4U2Proxy to a removed SPN: %v\n%s", err, out)
	}

	// Without protocol transition the evidence is not forwardable.
	must(t)(c.SetSPN(ctx, "ADASA9", spn))
	must(t)(c.SetProtocolTransition(ctx, svc, false))
	if out, err := s4u("alice"); err == nil {
		t.Fatalf("S4U2Proxy without TRUSTED_TO_AUTH_FOR_DELEGATION succeeded:\n%s", out)
	}
}
