package ad_test

import (
	"errors"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
)

// TestCertificateMappings: an account's altSecurityIdentities and
// whenCreated, found by its SID (not by a name); an unknown SID and a
// malformed one are errors.
func TestCertificateMappings(t *testing.T) {
	l, c, ctx := dial(t)
	if _, err := c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: "certmap1", Password: lab.UserPassword}); err != nil {
		t.Fatal(err)
	}
	a, err := c.FindAccount(ctx, "certmap1")
	if err != nil {
		t.Fatal(err)
	}
	alt, created, err := c.CertificateMappings(ctx, a.SID)
	if err != nil || len(alt) != 0 || time.Since(created) > time.Hour || time.Since(created) < -time.Minute {
		t.Fatalf("new account: %q %v %v", alt, created, err)
	}
	tc, _ := l.TLSConfig()
	conn, err := ldap.DialURL(l.LDAPSURL(), ldap.DialWithTLSConfig(tc))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Bind(l.AdminUser+"@"+l.DNSDomain, l.AdminPassword); err != nil {
		t.Fatal(err)
	}
	want := []string{"X509:<I>DC=test,DC=example,CN=Corp CA<SR>0a0b0c", "X509:<SKI>0102"}
	m := ldap.NewModifyRequest(a.DN, nil)
	m.Replace("altSecurityIdentities", want)
	if err := conn.Modify(m); err != nil {
		t.Fatal(err)
	}
	if alt, _, err = c.CertificateMappings(ctx, a.SID); err != nil || len(alt) != 2 {
		t.Fatalf("after the write: %q %v", alt, err)
	}
	if _, _, err := c.CertificateMappings(ctx, a.SID+"9"); !errors.Is(err, ad.ErrNotFound) {
		t.Errorf("unknown SID: %v", err)
	}
	if _, _, err := c.CertificateMappings(ctx, "certmap1"); err == nil {
		t.Error("a name taken for a SID")
	}
}
