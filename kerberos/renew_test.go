package kerberos

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// Renewing the TGT ahead of its end makes nobody wait: with the KDC
// hanging, TGT returns the ticket in hand at once, one login runs in the
// background, and its failure is tried again in half a minute, not on
// every call.
func TestTGTRenewAheadDoesNotWait(t *testing.T) {
	cfg, err := ParseConfig("[libdefaults]\n default_realm = CORP.TEST\n[realms]\n CORP.TEST = {\n  kdc = 127.0.0.1:1\n }\n")
	if err != nil {
		t.Fatal(err)
	}
	c := NewWithPassword("svc", "CORP.TEST", "unused", cfg)
	var sends atomic.Int64
	release := make(chan struct{})
	c.send = func(ctx context.Context, realm string, req []byte) ([]byte, string, error) {
		sends.Add(1)
		<-release
		return nil, "", errors.New("stub: the KDC is down")
	}
	now := time.Now()
	old := &Ticket{state: &ticketState{}, StartTime: now.Add(-8 * time.Hour), EndTime: now.Add(2 * time.Hour)}
	c.tgt, c.renewAt = old, now.Add(-time.Minute)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		done := make(chan *Ticket)
		go func() { got, _ := c.TGT(ctx); done <- got }()
		select {
		case got := <-done:
			if got != old {
				t.Fatal("not the TGT in hand")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("TGT waited for the renewal")
		}
	}
	waitFor(t, func() bool { return sends.Load() == 1 })
	close(release)
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return !c.renewing })
	if got, _ := c.TGT(ctx); got != old {
		t.Fatal("not the TGT in hand after a failed renewal")
	}
	time.Sleep(50 * time.Millisecond)
	if n := sends.Load(); n != 1 {
		t.Fatalf("%d logins after a failed renewal, want 1 until half a minute has passed", n)
	}
	// Without a usable TGT the caller waits for the KDC, and hears its error.
	c.mu.Lock()
	c.tgt = &Ticket{state: &ticketState{}, StartTime: now.Add(-10 * time.Hour), EndTime: now.Add(time.Second)}
	c.mu.Unlock()
	if _, err := c.TGT(ctx); err == nil {
		t.Fatal("an expiring TGT was served")
	}
}

// The default margins: 5 minutes, or a tenth of a short ticket's lifetime;
// for the TGT at least 2 minutes and at most half its life.
func TestDefaultMargin(t *testing.T) {
	c := &Client{}
	now := time.Now()
	for _, m := range []struct {
		life time.Duration
		want time.Duration
	}{{10 * time.Hour, 5 * time.Minute}, {30 * time.Minute, 3 * time.Minute}, {5 * time.Minute, 2 * time.Minute},
		{3 * time.Minute, 90 * time.Second}, {0, 5 * time.Minute}} {
		if got := c.renewBefore(&Ticket{AuthTime: now, EndTime: now.Add(m.life)}); got != m.want {
			t.Errorf("TGT life %v: margin %v, want %v", m.life, got, m.want)
		}
	}
	now = time.Now()
	for _, c := range []struct {
		life time.Duration
		want time.Duration
	}{{10 * time.Hour, 5 * time.Minute}, {time.Hour, 5 * time.Minute}, {5 * time.Minute, 30 * time.Second}, {0, 5 * time.Minute}} {
		if got := defaultMargin(&Ticket{StartTime: now, EndTime: now.Add(c.life)}); got != c.want {
			t.Errorf("life %v: margin %v, want %v", c.life, got, c.want)
		}
	}
	if got := defaultMargin(&Ticket{AuthTime: now, EndTime: now.Add(time.Minute)}); got != 6*time.Second {
		t.Errorf("auth time as the start: %v", got)
	}
}
