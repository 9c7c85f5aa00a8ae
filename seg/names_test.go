package seg_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/seg"
)

// countingResolver answers like a KDC and counts the questions; block, when
// set, holds every answer until it is closed.
type countingResolver struct {
	dir   directory
	calls atomic.Int64
	fail  error // when set, every answer (a transport failure)
	block chan struct{}
}

func (c *countingResolver) Account(ctx context.Context, name string) (*kerberos.Account, error) {
	c.calls.Add(1)
	if c.block != nil {
		<-c.block
	}
	if c.fail != nil {
		return nil, c.fail
	}
	return c.dir.Account(ctx, name)
}

func TestAccounts(t *testing.T) {
	ctx := context.Background()
	res := &countingResolver{dir: testDirectory(), block: make(chan struct{})}
	a := &seg.Accounts{Resolver: res, NegativeTTL: 50 * time.Millisecond}
	// Concurrent first requests for one name, in any spelling, share one
	// question.
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			name := "alice@example.com"
			if i%2 == 1 {
				name = "ALICE@EXAMPLE.COM"
			}
			if acct, err := a.Account(ctx, name); err != nil || acct.User != "xsmith" {
				t.Errorf("%s: %+v %v", name, acct, err)
			}
		}(i)
	}
	time.Sleep(50 * time.Millisecond)
	close(res.block)
	wg.Wait()
	if n := res.calls.Load(); n != 1 {
		t.Errorf("50 concurrent first requests asked %d times", n)
	}
	// Refusals are remembered for NegativeTTL, then asked again.
	for i := 0; i < 3; i++ {
		if _, err := a.Account(ctx, "nobody"); !errors.Is(err, seg.ErrBadName) || !errors.Is(err, kerberos.ErrClientUnknown) {
			t.Fatalf("unknown: %v", err)
		}
	}
	if n := res.calls.Load(); n != 2 {
		t.Errorf("three refusals asked %d times", n-1)
	}
	time.Sleep(60 * time.Millisecond)
	a.Account(ctx, "nobody")
	if n := res.calls.Load(); n != 3 {
		t.Errorf("after NegativeTTL: %d questions", n)
	}
	// The way to the KDC failing is never remembered, and says so.
	down := &countingResolver{dir: testDirectory(), fail: fmt.Errorf("%w: test", kerberos.ErrNoKDC)}
	b := &seg.Accounts{Resolver: down}
	for i := 0; i < 2; i++ {
		if _, err := b.Account(ctx, "alice"); !errors.Is(err, kerberos.ErrNoKDC) || errors.Is(err, seg.ErrBadName) {
			t.Fatalf("KDC down: %v", err)
		}
	}
	if n := down.calls.Load(); n != 2 || b.Len() != 0 {
		t.Errorf("KDC down: %d questions, %d remembered", n, b.Len())
	}
	// A waiter whose request ends stops waiting; the question goes on.
	slow := &countingResolver{dir: testDirectory(), block: make(chan struct{})}
	c := &seg.Accounts{Resolver: slow}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := c.Account(cctx, "alice"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cancelled waiter: %v", err)
	}
	close(slow.block)
	if acct, err := c.Account(ctx, "alice"); err != nil || acct.User != "alice" || slow.calls.Load() != 1 {
		t.Errorf("after the cancelled waiter: %+v %v (%d questions)", acct, err, slow.calls.Load())
	}
}

// TestAccountsBounded: a flood of distinct names keeps the memory bounded.
func TestAccountsBounded(t *testing.T) {
	res := &countingResolver{dir: testDirectory()}
	a := &seg.Accounts{Resolver: res, MaxEntries: 100}
	for i := 0; i < 5000; i++ {
		a.Account(context.Background(), fmt.Sprintf("flood%d", i))
	}
	if n := a.Len(); n > 100 {
		t.Errorf("%d names remembered, bound 100", n)
	}
	a.Forget()
	if a.Len() != 0 {
		t.Error("Forget left names")
	}
}

// TestRedirectsKeepNamesApart: a 451 mapping for one account is not served
// to another that Unicode's upper-casing joins with it.
func TestRedirectsKeepNamesApart(t *testing.T) {
	u, _ := url.Parse("https://mail2.corp.example.test")
	up := &seg.Upstream{URL: u}
	var r seg.Redirects
	r.Set("\u017fam", up)
	if r.Get("SAM") != nil || r.Get("sam") != nil {
		t.Error("sam got \u017fam's redirect")
	}
	if r.Get("\u017fAM") != up {
		t.Error("\u017fAM lost \u017fam's redirect")
	}
	r.Set("tim", up)
	if r.Get("T\u0131M") != nil || r.Get("TIM") != up {
		t.Error("dotless i")
	}
}

// TestPolicyUsersKeepNamesApart: a policy entry for SAM does not match the
// account \u017fam, and an entry written as a UPN matches its account.
func TestPolicyUsersKeepNamesApart(t *testing.T) {
	p := &seg.Policy{Names: seg.Names{Realm: "CORP.EXAMPLE.TEST", Suffixes: []string{"example.com"}}}
	if err := p.Set(&seg.PolicyRules{Block: seg.PolicyList{Users: []string{"SAM", "alice@example.com"}}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		in      seg.PolicyInput
		blocked bool
	}{
		{seg.PolicyInput{User: "sam", DeviceID: "D1"}, true},
		{seg.PolicyInput{User: "\u017fam", DeviceID: "D1"}, false},
		{seg.PolicyInput{User: "xsmith", UPN: "alice@example.com", DeviceID: "D1"}, true},
		{seg.PolicyInput{User: "alice", UPN: "alice@corp.example.test", DeviceID: "D1"}, false},
	} {
		if d := p.Decide(tc.in); d.Allow == tc.blocked {
			t.Errorf("%+v: %+v", tc.in, d)
		}
	}
}

// FuzzPrincipal: whatever a device sends as a login name, Principal either
// refuses it or returns a name of the same shape (no control character, no
// '/'), and the comparison key agrees with EqualNames.
func FuzzPrincipal(f *testing.F) {
	for _, s := range []string{"alice", `CORP\alice`, "alice@corp.example.test", "j.doe@EXAMPLE.COM", "a@b@c", "\u017fam", "\xff", "x/y"} {
		f.Add(s, "SAM")
	}
	n := seg.Names{Realm: "CORP.EXAMPLE.TEST", Suffixes: []string{"example.com"}, NetBIOS: "CORP"}
	f.Fuzz(func(t *testing.T, a, b string) {
		p, err := n.Principal(a)
		if err != nil {
			if !errors.Is(err, seg.ErrBadName) {
				t.Fatalf("%q: %v", a, err)
			}
			return
		}
		if p == "" || strings.ContainsAny(p, "/\\\r\n\x00") || strings.Count(p, "@") > 1 {
			t.Fatalf("%q -> %q", a, p)
		}
		if kerberos.EqualNames(a, b) != (kerberos.UpperName(a) == kerberos.UpperName(b)) {
			t.Fatalf("EqualNames(%q, %q) disagrees with UpperName", a, b)
		}
		if u := kerberos.UpperName(a); kerberos.UpperName(u) != u {
			t.Fatalf("UpperName(%q) = %q is not stable", a, u)
		}
	})
}
