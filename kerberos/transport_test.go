package kerberos_test

import (
	"context"
	"errors"
	"net"
	"runtime"
	"sync"
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
	c := kerberos.NewWithPassword("svc", "EXAMPLE.TEST", "pw", cfg,
		kerberos.WithTransport(&kerberos.Transport{Config: cfg, Timeout: 200 * time.Millisecond}))
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
	c := kerberos.NewWithPassword(svcName, e.lab.Realm, svcPassword, cfg,
		kerberos.WithTransport(&kerberos.Transport{Config: cfg, Timeout: 300 * time.Millisecond}))
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
