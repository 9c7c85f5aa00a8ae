package ad_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/segkcd/segkcd/ad"
)

// recordingRelay forwards TCP connections to target and keeps every byte
// the client sent.
type recordingRelay struct {
	ln   net.Listener
	mu   sync.Mutex
	sent bytes.Buffer
}

func newRelay(t *testing.T, target string) *recordingRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recordingRelay{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go func() { io.Copy(c, up); c.Close() }()
			go func() { io.Copy(io.MultiWriter(up, r), c); up.Close() }()
		}
	}()
	return r
}

func (r *recordingRelay) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent.Write(p)
}

func (r *recordingRelay) saw(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Contains(r.sent.Bytes(), []byte(s))
}

// A simple bind never leaves without TLS: on a connection kept in clear it
// is refused before its password is sent (captured through a relay); with
// StartTLS it goes encrypted.
func TestSimpleBindNeverInClear(t *testing.T) {
	l := theLab.Get(t)
	ctx := context.Background()
	relay := newRelay(t, net.JoinHostPort(l.IP, "389"))
	tlsCfg, err := l.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	url := "ldap://" + relay.ln.Addr().String()
	bind := ad.SimpleBind{Username: l.AdminBindName(), Password: l.AdminPassword}
	_, err = ad.Dial(ctx, ad.Config{URL: url, TLSConfig: tlsCfg, Bind: bind, PlaintextKerberosBind: true})
	wantKind(t, err, ad.ErrTLSRequired)
	if relay.saw(l.AdminPassword) || relay.saw(l.AdminUser) {
		t.Fatal("the bind went out in clear")
	}
	// The default upgrades with StartTLS, and the bind then works, encrypted.
	c, err := ad.Dial(ctx, ad.Config{URL: url, TLSConfig: tlsCfg, Bind: bind})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if relay.saw(l.AdminPassword) {
		t.Fatal("the password is in the captured bytes")
	}
}
