package kerberos_test

import (
	"context"
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segkcd/segkcd/kerberos"
)

// blackhole accepts TCP connections and reads UDP datagrams, never answering.
func blackhole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never answered
			mu.Unlock()
		}
	}()
	go func() {
		buf := make([]byte, 65535)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				close(done)
				return
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		pc.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return addr
}

// closedPort is an address where nothing listens.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestTransportTimeoutNoLeak(t *testing.T) {
	hole := blackhole(t)
	cfg, err := kerberos.NewConfig("EXAMPLE.TEST", hole)
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	c := kerberos.NewWithPassword("svc", "EXAMPLE.TEST", "pw", cfg)
	c.Transport = &kerberos.Transport{Config: cfg, Timeout: 200 * time.Millisecond}
	start := time.Now()
	_, err = c.TGT(context.Background())
	elapsed := time.Since(start)
	if !errors.Is(err, kerberos.ErrNoKDC) {
		t.Fatalf("want ErrNoKDC, got %v", err)
	}
	// Two attempts (UDP, TCP) of 200 ms each; generous bound, not a timing assertion on speed.
	if elapsed > 2*time.Second {
		t.Fatalf("took %v with a 200ms per-attempt timeout", elapsed)
	}
	// A cancelled context stops at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.TGT(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("goroutines: %d before, %d after", before, n)
	}
}

func TestTransportFailover(t *testing.T) {
	e := setup(t)
	// The first KDC refuses connections, the second drops everything; the third is the lab.
	cfg, err := kerberos.NewConfig(e.lab.Realm, closedPort(t), blackhole(t), e.lab.KDCAddr())
	if err != nil {
		t.Fatal(err)
	}
	c := kerberos.NewWithPassword(svcName, e.lab.Realm, svcPassword, cfg)
	c.Transport = &kerberos.Transport{Config: cfg, Timeout: 300 * time.Millisecond}
	tk, err := c.Impersonate(context.Background(), "alice", e.mailSPN)
	if err != nil {
		t.Fatal(err)
	}
	if tk.Client.PrincipalNameString() != "alice" {
		t.Fatal(tk)
	}
}

func TestTransportTCPOnlyKDC(t *testing.T) {
	e := setup(t)
	cfg, err := kerberos.NewConfig(e.lab.Realm, e.lab.KDCAddr())
	if err != nil {
		t.Fatal(err)
	}
	// A limit of 1 byte sends everything over TCP first, as for large PAC-bearing requests.
	cfg.LibDefaults.UDPPreferenceLimit = 1
	c := kerberos.NewWithPassword(svcName, e.lab.Realm, svcPassword, cfg)
	if _, err := c.Impersonate(context.Background(), "bob", e.mailSPN); err != nil {
		t.Fatal(err)
	}
}

// connGauge is a dialer that tracks how many KDC connections are open.
type connGauge struct {
	mu        sync.Mutex
	open, max int
}

func (g *connGauge) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.open++
	if g.open > g.max {
		g.max = g.open
	}
	g.mu.Unlock()
	return &gaugedConn{Conn: c, g: g}, nil
}

type gaugedConn struct {
	net.Conn
	g    *connGauge
	once sync.Once
}

func (c *gaugedConn) Close() error {
	c.once.Do(func() { c.g.mu.Lock(); c.g.open--; c.g.mu.Unlock() })
	return c.Conn.Close()
}

// TestTransportQueuesBursts: 200 users' first requests at once, over TCP
// with a strict 1s attempt timeout, all succeed, because at most
// MaxInFlight connections are open to the KDC at a time. Unqueued, Samba's
// listen backlog of 10 drops SYNs and the 1s SYN retransmission fails
// attempts (seen at the gateway with 60 users).
func TestTransportQueuesBursts(t *testing.T) {
	e := setup(t)
	cfg, err := kerberos.NewConfig(e.lab.Realm, e.lab.KDCAddr())
	if err != nil {
		t.Fatal(err)
	}
	cfg.LibDefaults.UDPPreferenceLimit = 1
	g := &connGauge{}
	c := kerberos.NewWithPassword(svcName, e.lab.Realm, svcPassword, cfg)
	c.Transport = &kerberos.Transport{Config: cfg, Timeout: time.Second, Dialer: g}
	if _, err := c.TGT(context.Background()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.S4U2Self(context.Background(), "alice"); err != nil {
				failed.Add(1)
				t.Log(err)
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of 200 failed", n)
	}
	if g.max > 8 {
		t.Errorf("%d connections open at once, want at most 8", g.max)
	}
}
