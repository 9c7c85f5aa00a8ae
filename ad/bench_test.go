package ad_test

import (
	"context"
	"testing"

	"github.com/segkcd/segkcd"
	"github.com/segkcd/segkcd/ad"
)

// Single operations on an open LDAPS connection to the lab DC.
// bench/run prints them next to the peer comparison.

// benchConn is an administrator connection to the lab, closed after the benchmark.
func benchConn(b *testing.B) (*ad.Conn, context.Context) {
	l := theLab.Get(b)
	ctx := context.Background()
	c, err := l.Dial(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c, ctx
}

func BenchmarkFindAccount(b *testing.B) {
	c, ctx := benchConn(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.FindAccount(ctx, "alice"); err != nil {
			b.Fatal(err)
		}
	}
}

// The idempotent path of SetSPN when the SPN is already there: one search.
func BenchmarkSetSPNUnchanged(b *testing.B) {
	c, ctx := benchConn(b)
	// An account of this package's own: bob is every test binary's.
	if _, err := c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: "svc_adbench", Password: "Bench-Passw0rd-1!"}); err != nil {
		b.Fatal(err)
	}
	if _, err := c.SetSPN(ctx, "svc_adbench", "HTTP/bench.spn"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ch, err := c.SetSPN(ctx, "svc_adbench", "HTTP/bench.spn")
		if err != nil || ch.Action != segkcd.Unchanged {
			b.Fatal(ch, err)
		}
	}
}

// Dial: TCP, TLS handshake, simple bind, rootDSE and domain reads.
func BenchmarkDial(b *testing.B) {
	l := theLab.Get(b)
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		c, err := l.Dial(ctx)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
