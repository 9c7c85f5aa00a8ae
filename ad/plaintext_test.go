package ad_test

import (
	"context"
	"net"
	"testing"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/internal/testinfra/tcprelay"
)

// A simple bind never leaves without TLS: on a connection kept in clear it
// is refused before its password is sent (captured through a relay); with
// StartTLS it goes encrypted.
func TestSimpleBindNeverInClear(t *testing.T) {
	l := theLab.Get(t)
	ctx := context.Background()
	relay := tcprelay.New(t, net.JoinHostPort(l.IP, "389"))
	tlsCfg, err := l.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	url := "ldap://" + relay.Addr()
	bind := ad.SimpleBind{Username: l.AdminBindName(), Password: l.AdminPassword}
	_, err = ad.Dial(ctx, ad.Config{URL: url, TLSConfig: tlsCfg, Bind: bind, PlaintextKerberosBind: true})
	wantKind(t, err, ad.ErrTLSRequired)
	if relay.Saw(l.AdminPassword) || relay.Saw(l.AdminUser) {
		t.Fatal("the bind went out in clear")
	}
	// The default upgrades with StartTLS, and the bind then works, encrypted.
	c, err := ad.Dial(ctx, ad.Config{URL: url, TLSConfig: tlsCfg, Bind: bind})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if relay.Saw(l.AdminPassword) {
		t.Fatal("the password is in the captured bytes")
	}
}
