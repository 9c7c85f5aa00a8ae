package kerberos_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
	"github.com/segkcd/segkcd/kerberos"
)

// AD keeps "kelly" and "\u212aelly" (KELVIN SIGN) as two accounts and the
// KDC issues each its own tickets; a cache that folds case would serve one
// the other's. Interleaved, in both orders, each gets its own.
func TestCacheKeepsKelvinApart(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	kelvin := "\u212aelly"
	for _, u := range []string{"kelly", kelvin} {
		if _, err := e.lab.SambaTool(ctx, "user", "create", u, lab.UserPassword); err != nil && !strings.Contains(err.Error(), "already exists") {
			t.Fatalf("create %q: %v", u, err)
		}
	}
	for _, order := range [][]string{{"kelly", kelvin}, {kelvin, "kelly"}} {
		cache := &kerberos.Cache{Source: e.client()}
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for i := 0; i < 100; i++ {
			for _, u := range order {
				wg.Add(1)
				go func(u string) {
					defer wg.Done()
					tk, err := cache.Ticket(ctx, u, e.mailSPN)
					if err == nil && (len(tk.Client.NameString) != 1 || tk.Client.NameString[0] != u) {
						err = fmt.Errorf("asked for %q (% x), got a ticket for %q (% x)", u, u, tk.Client.NameString, tk.Client.PrincipalNameString())
					}
					if err != nil {
						errs <- err
					}
				}(u)
			}
			if i == 0 {
				wg.Wait() // the first of the order is cached first
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if s := cache.Stats(); s.Exchanges != 2 || s.Mismatches != 0 {
			t.Fatalf("order %q: stats %+v", order, s)
		}
	}
}

// Concurrent requests never change the configuration's KDC list (gokrb5's
// GetKDCs shuffled it in place: -race flagged it and a KDC got lost), and
// a dead KDC first in the list costs its timeout once, not on every request.
func TestTransportOrderAndRace(t *testing.T) {
	e := setup(t)
	hole := blackhole(t)
	cfg, err := kerberos.NewConfig(e.lab.Realm, hole, e.lab.KDCAddr(), closedPort(t), e.lab.KDCAddr())
	if err != nil {
		t.Fatal(err)
	}
	before := append([]string(nil), cfg.Realms[0].KDC...)
	d := &perAddrDialer{}
	// A timeout the single-process lab KDC meets under 64 concurrent requests with -race.
	tr := &kerberos.Transport{Config: cfg, Timeout: 2 * time.Second, Dialer: d}
	c := kerberos.NewWithPassword(svcName, e.lab.Realm, svcPassword, cfg)
	c.Transport = tr
	ctx := context.Background()
	if _, err := c.TGT(ctx); err != nil {
		t.Fatal(err)
	}
	if d.count(hole) == 0 {
		t.Fatal("the first KDC was never tried")
	}
	holeTries := d.count(hole)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, err := c.Impersonate(ctx, []string{"alice", "bob"}[i%2], e.mailSPN); err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := d.count(hole); n != holeTries {
		t.Fatalf("the dead KDC was tried again %d times after it failed", n-holeTries)
	}
	if got := cfg.Realms[0].KDC; fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatalf("KDC list changed: %v, was %v", got, before)
	}
}

// perAddrDialer counts dials per address.
type perAddrDialer struct {
	mu sync.Mutex
	n  map[string]int
}

func (d *perAddrDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	if d.n == nil {
		d.n = map[string]int{}
	}
	d.n[addr]++
	d.mu.Unlock()
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

func (d *perAddrDialer) count(addr string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n[addr]
}

// garbageKDC answers every UDP and TCP request with bytes that are not a
// Kerberos reply.
func garbageKDC(t *testing.T, reply []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(reply, from)
		}
	}()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				buf := make([]byte, 65535)
				conn.Read(buf)
				msg := append([]byte{0, 0, 0, byte(len(reply))}, reply...)
				conn.Write(msg)
			}()
		}
	}()
	return ln.Addr().String()
}

// A KDC that answers garbage (or a reply of the wrong type) is skipped for
// the next one, and the error names it when no KDC is left.
func TestTransportMalformedReplyFailsOver(t *testing.T) {
	e := setup(t)
	for name, reply := range map[string][]byte{
		"not DER":        []byte("HTTP/1.0 400 Bad Request\r\n\r\n"),
		"wrong type":     {0x6d, 0x03, 0x02, 0x01, 0x05}, // a TGS-REP tag to an AS-REQ
		"truncated":      {0x6b, 0x82, 0x01},
		"bad KRB-ERROR":  {0x7e, 0x03, 0x02, 0x01, 0x05},
		"empty sequence": {0x6b, 0x00},
	} {
		t.Run(name, func(t *testing.T) {
			bad := garbageKDC(t, reply)
			cfg, err := kerberos.NewConfig(e.lab.Realm, bad, e.lab.KDCAddr())
			if err != nil {
				t.Fatal(err)
			}
			c := kerberos.NewWithPassword(svcName, e.lab.Realm, svcPassword, cfg)
			if _, err := c.Impersonate(context.Background(), "alice", e.mailSPN); err != nil {
				t.Fatalf("no fail-over past a KDC answering %s: %v", name, err)
			}
			only, _ := kerberos.NewConfig(e.lab.Realm, bad)
			_, err = kerberos.NewWithPassword(svcName, e.lab.Realm, svcPassword, only).TGT(context.Background())
			if !errors.Is(err, kerberos.ErrNoKDC) || !strings.Contains(err.Error(), bad) {
				t.Fatalf("error does not name the KDC %s: %v", bad, err)
			}
		})
	}
}

// After the krbtgt key changes twice, the KDC rejects the service TGT
// (its key is gone). The client drops it, logs in once more and retries,
// instead of failing every request until the TGT's own end.
func TestRejectedTGTIsReplaced(t *testing.T) {
	e := setupOn(t, theLab.Own(t)) // krbtgt's new keys would reject every other binary's TGTs
	ctx := context.Background()
	d := &countingDialer{}
	c := e.clientVia(&kerberos.Transport{Config: e.cfg, Dialer: d})
	old, err := c.TGT(ctx)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := e.lab.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for i := 0; i < 2; i++ {
		pw, err := ad.GeneratePassword(64, "krbtgt")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.ResetPassword(ctx, "krbtgt", pw); err != nil {
			t.Fatalf("reset krbtgt: %v", err)
		}
	}
	d.n.Store(0)
	tk, err := c.Impersonate(ctx, "alice", e.mailSPN)
	if err != nil {
		t.Fatalf("after the krbtgt reset: %v", err)
	}
	now, _ := c.TGT(ctx)
	if now == old || tk.Client.PrincipalNameString() != "alice" {
		t.Fatal("the rejected TGT was kept")
	}
	// The rejected S4U2Self, the AS exchange (PREAUTH_REQUIRED; then with
	// pre-authentication by UDP, RESPONSE_TOO_BIG, by TCP), S4U2Self and
	// S4U2Proxy: one login, one retry.
	if n := d.n.Load(); n != 6 {
		t.Fatalf("%d KDC connections, want 6", n)
	}
}
