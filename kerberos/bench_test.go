package kerberos_test

import (
	"context"
	"testing"

	"github.com/segkcd/segkcd/kerberos"
)

// The warm path of the gateway: a cache hit and a fresh Negotiate header,
// with no KDC traffic.
func BenchmarkWarmTicketAndHeader(b *testing.B) {
	e := setup(b)
	ctx := context.Background()
	d := &countingDialer{}
	cache := &kerberos.Cache{Source: e.clientVia(&kerberos.Transport{Config: e.cfg, Dialer: d})}
	if _, err := cache.Ticket(ctx, "alice", e.mailSPN); err != nil {
		b.Fatal(err)
	}
	before := d.n.Load()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t, err := cache.Ticket(ctx, "alice", e.mailSPN)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := kerberos.NegotiateHeader(t); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if d.n.Load() != before {
		b.Fatal("the warm path talked to the KDC")
	}
}

// The cold path in-process: S4U2Self + S4U2Proxy with the service TGT held.
func BenchmarkImpersonateCold(b *testing.B) {
	e := setup(b)
	ctx := context.Background()
	c := e.client()
	if _, err := c.TGT(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Impersonate(ctx, "alice", e.mailSPN); err != nil {
			b.Fatal(err)
		}
	}
}
