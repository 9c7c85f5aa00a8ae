package seg_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
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
	if n := down.calls.Load(); n != 2 || b.SizeForTest() != 0 {
		t.Errorf("KDC down: %d questions, %d remembered", n, b.SizeForTest())
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
	a := &seg.Accounts{Resolver: res, MaxEntries: 100, MaxRefused: 100}
	for i := 0; i < 5000; i++ {
		a.Account(context.Background(), fmt.Sprintf("flood%d", i))
	}
	if n := a.SizeForTest(); n > 200 {
		t.Errorf("%d names remembered, bound 100 accounts and 100 refusals", n)
	}
	a.Forget()
	if a.SizeForTest() != 0 {
		t.Error("Forget left names")
	}
}

// TestRedirectsBySID: a 451 mapping is the account's, keyed by its SID; a
// name is only carried for List.
func TestRedirectsBySID(t *testing.T) {
	u, _ := url.Parse("https://mail2.corp.example.test")
	up := &seg.Upstream{URL: u}
	var r seg.Redirects
	r.Set("S-1-5-21-1-2001", "\u017fam", up)
	if r.Get("S-1-5-21-1-2002") != nil || r.Get("sam") != nil {
		t.Error("another account got \u017fam's redirect")
	}
	if r.Get("S-1-5-21-1-2001") != up {
		t.Error("the account lost its redirect")
	}
	if l := r.List(); len(l) != 1 || l[0].SID != "S-1-5-21-1-2001" || l[0].User != "\u017fam" {
		t.Errorf("List: %+v", l)
	}
	r.Clear("S-1-5-21-1-2001")
	if r.Get("S-1-5-21-1-2001") != nil {
		t.Error("Clear")
	}
}

// TestPolicyUsersBySID: policy entries are resolved to SIDs through the
// directory; an entry for SAM does not match the account \u017fam, an entry
// written as a UPN matches its holder, an entry that names no account
// matches no one and is reported, and a SID matches as written.
func TestPolicyUsersBySID(t *testing.T) {
	dir := testDirectory()
	sam := &kerberos.Account{User: "sam", Name: "sam", SID: "S-1-5-21-1-2001"}
	longS := &kerberos.Account{User: "\u017fam", Name: "\u017fam", SID: "S-1-5-21-1-2002"}
	dir["SAM"], dir["\u017fAM"] = sam, longS
	names := seg.Names{Realm: "CORP.EXAMPLE.TEST", Suffixes: []string{"example.com"}, Accounts: &seg.Accounts{Resolver: dir}}
	p := &seg.Policy{Names: names}
	err := p.Set(&seg.PolicyRules{
		Block:   seg.PolicyList{Users: []string{"SAM", "alice@example.com", "ghost"}},
		Allow:   seg.PolicyList{Users: []string{"S-1-5-21-1-1103", "nobody@example.com"}},
		Devices: map[string]seg.DeviceState{"ENROLLED": {User: "alice", Managed: true}, "ORPHAN": {User: "ghost2", Managed: true}},
		Rules:   seg.PolicyChecks{RequireManaged: true}})
	if err != nil {
		t.Fatal(err)
	}
	alice := dir["ALICE"]
	for _, tc := range []struct {
		in   seg.PolicyInput
		rule string
	}{
		{seg.PolicyInput{SID: sam.SID, User: "sam", DeviceID: "D1"}, "block.users"},
		{seg.PolicyInput{SID: longS.SID, User: "\u017fam", DeviceID: "D1"}, "rules.require_managed"},
		{seg.PolicyInput{SID: dir["XSMITH"].SID, User: "xsmith", DeviceID: "D1"}, "block.users"},
		{seg.PolicyInput{SID: dir["JDOE"].SID, User: "jdoe", DeviceID: "D1"}, "allow.users"},
		{seg.PolicyInput{SID: alice.SID, User: "alice", DeviceID: "enrolled"}, "rules"},
		{seg.PolicyInput{SID: longS.SID, User: "\u017fam", DeviceID: "ENROLLED"}, "devices.user"},
		{seg.PolicyInput{SID: alice.SID, User: "alice", DeviceID: "ORPHAN"}, "devices.user"},
	} {
		if d := p.Decide(tc.in); d.Rule != tc.rule {
			t.Errorf("%+v: %+v", tc.in, d)
		}
	}
	var unresolved []string
	for _, u := range p.Unresolved() {
		unresolved = append(unresolved, u.Where+":"+u.Entry)
	}
	sort.Strings(unresolved)
	if want := []string{"allow.users:nobody@example.com", "block.users:ghost", "devices.ORPHAN.user:ghost2"}; !slices.Equal(unresolved, want) {
		t.Errorf("unresolved: %q", unresolved)
	}
}

// TestAccountsMovedName: a name asked again (Refresh) that now names
// another SID is the new holder's for every later request, and counts as a
// change, which makes a Policy resolve its names again.
func TestAccountsMovedName(t *testing.T) {
	dir := testDirectory()
	a := &seg.Accounts{Resolver: dir, MinRefresh: time.Nanosecond}
	ctx := context.Background()
	if acct, _ := a.Account(ctx, "alice@example.com"); acct.User != "xsmith" {
		t.Fatalf("before: %+v", acct)
	}
	p := &seg.Policy{Names: seg.Names{Realm: "CORP.EXAMPLE.TEST", Suffixes: []string{"example.com"}, Accounts: a}}
	if err := p.Set(&seg.PolicyRules{Block: seg.PolicyList{Users: []string{"alice@example.com"}}}); err != nil {
		t.Fatal(err)
	}
	if d := p.Decide(seg.PolicyInput{SID: dir["XSMITH"].SID}); d.Rule != "block.users" {
		t.Fatalf("xsmith: %+v", d)
	}
	// The UPN passes to jdoe.
	dir["ALICE@EXAMPLE.COM"] = dir["JDOE"]
	before := a.Changes()
	if acct, _ := a.Account(ctx, "alice@example.com"); acct.User != "xsmith" {
		t.Fatalf("remembered: %+v", acct)
	}
	if acct, err := a.Refresh(ctx, "alice@example.com"); err != nil || acct.User != "jdoe" {
		t.Fatalf("refresh: %+v %v", acct, err)
	}
	if acct, _ := a.Account(ctx, "alice@example.com"); acct.User != "jdoe" || a.Changes() == before {
		t.Fatalf("after: %+v, changes %d", acct, a.Changes())
	}
	// The policy follows in the background.
	deadline := time.Now().Add(5 * time.Second)
	for p.Decide(seg.PolicyInput{SID: dir["JDOE"].SID}).Rule != "block.users" {
		if time.Now().After(deadline) {
			t.Fatal("the policy kept the old holder")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := p.Decide(seg.PolicyInput{SID: dir["XSMITH"].SID}); d.Rule == "block.users" {
		t.Errorf("xsmith still blocked: %+v", d)
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

// lockable is a directory whose accounts can be disabled, as the KDC
// refuses them then (ErrPolicy).
type lockable struct {
	mu       sync.Mutex
	dir      directory
	disabled map[string]bool
}

func (l *lockable) Account(ctx context.Context, name string) (*kerberos.Account, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.disabled[asciiUpper(name)] {
		return nil, fmt.Errorf("%w: %s", kerberos.ErrPolicy, name)
	}
	return l.dir.Account(ctx, name)
}

// TestPolicyKeepsBlockedAccount: a blocked user who gets their account
// disabled or locked out (a few bad passwords) while the policy resolves its
// names again stays blocked once it is enabled again; and a user entry that
// looks like a SID but is not one as AD writes it is refused, never taken
// for a name that matches no one.
func TestPolicyKeepsBlockedAccount(t *testing.T) {
	dir := &lockable{dir: testDirectory(), disabled: map[string]bool{}}
	accounts := &seg.Accounts{Resolver: dir, TTL: time.Millisecond, NegativeTTL: time.Millisecond}
	p := &seg.Policy{Names: seg.Names{Realm: "CORP.EXAMPLE.TEST", Accounts: accounts}}
	rules := &seg.PolicyRules{Block: seg.PolicyList{Users: []string{"jdoe"}}}
	if err := p.Set(rules); err != nil {
		t.Fatal(err)
	}
	jdoe := testDirectory()["JDOE"].SID
	blocked := func() bool { return p.Decide(seg.PolicyInput{SID: jdoe}).Rule == "block.users" }
	if !blocked() {
		t.Fatal("not blocked")
	}
	dir.mu.Lock()
	dir.disabled["JDOE"] = true
	dir.mu.Unlock()
	time.Sleep(5 * time.Millisecond)
	if err := p.Set(rules); err != nil { // a reload while the account is locked out
		t.Fatal(err)
	}
	if !blocked() {
		t.Error("the block entry was dropped while the account was locked out")
	}
	if u := p.Unresolved(); len(u) != 1 || !strings.Contains(u[0].Reason, "is kept") {
		t.Errorf("unresolved: %+v", u)
	}
	dir.mu.Lock()
	delete(dir.disabled, "JDOE")
	dir.mu.Unlock()
	time.Sleep(5 * time.Millisecond)
	for i := 0; i < 3; i++ {
		if !blocked() {
			t.Error("unblocked after the lockout ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A SID written another way is the same SID; one out of range, or a
	// name that begins like a SID, names no one and is reported, and the
	// rest of the policy stands (one bad entry from an MDM must not stop
	// every later update).
	for spelling, want := range map[string]bool{"s-1-5-21-1-1103": true, "S-1-5-21-01-001103": true, "S-1-5-21-1-1103x": false,
		"S-1-5-21-99999999999-1103": false, "s-1-admin": false} {
		q := &seg.Policy{Names: seg.Names{Realm: "CORP.EXAMPLE.TEST", Accounts: &seg.Accounts{Resolver: testDirectory()}}}
		if err := q.Set(&seg.PolicyRules{Block: seg.PolicyList{Users: []string{spelling}, Devices: []string{"STOLEN"}}}); err != nil {
			t.Fatalf("%q: %v", spelling, err)
		}
		if got := q.Decide(seg.PolicyInput{SID: jdoe}).Rule == "block.users"; got != want {
			t.Errorf("%q blocks jdoe: %v", spelling, got)
		}
		if q.Decide(seg.PolicyInput{SID: jdoe, DeviceID: "STOLEN"}).Allow {
			t.Errorf("%q: the rest of the policy was lost", spelling)
		}
		if !want && len(q.Unresolved()) != 1 {
			t.Errorf("%q not reported: %+v", spelling, q.Unresolved())
		}
	}
}

// TestPolicyAllowEntryGone: an allow entry whose name no account holds any
// more (renamed, deleted) lets no one in, where a block entry keeps its
// account.
func TestPolicyAllowEntryGone(t *testing.T) {
	dir := testDirectory()
	accounts := &seg.Accounts{Resolver: dir, TTL: time.Millisecond, NegativeTTL: time.Millisecond}
	p := &seg.Policy{Names: seg.Names{Realm: "CORP.EXAMPLE.TEST", Accounts: accounts}}
	rules := &seg.PolicyRules{Allow: seg.PolicyList{Users: []string{"jdoe"}}, Block: seg.PolicyList{Users: []string{"xsmith"}},
		Rules: seg.PolicyChecks{RequireManaged: true}}
	if err := p.Set(rules); err != nil {
		t.Fatal(err)
	}
	jdoe, xsmith := dir["JDOE"].SID, dir["XSMITH"].SID
	delete(dir, "JDOE")
	delete(dir, "XSMITH")
	time.Sleep(5 * time.Millisecond)
	if err := p.Set(rules); err != nil {
		t.Fatal(err)
	}
	if d := p.Decide(seg.PolicyInput{SID: jdoe}); d.Rule == "allow.users" {
		t.Error("an allow entry whose name is gone still lets its old account in")
	}
	if d := p.Decide(seg.PolicyInput{SID: xsmith}); d.Rule != "block.users" {
		t.Error("a block entry whose name is gone let its account go")
	}
}

// flaky answers from dir until down is set, then fails as an absent KDC.
type flaky struct {
	dir  directory
	down atomic.Bool
}

func (f *flaky) Account(ctx context.Context, name string) (*kerberos.Account, error) {
	if f.down.Load() {
		return nil, kerberos.ErrNoKDC
	}
	return f.dir.Account(ctx, name)
}

// TestAccountsRefreshKDCDown: a name asked about again while no KDC answers
// fails for the caller that wanted a fresh answer, and keeps its good answer
// for everyone else.
func TestAccountsRefreshKDCDown(t *testing.T) {
	f := &flaky{dir: testDirectory()}
	a := &seg.Accounts{Resolver: f, MinRefresh: time.Nanosecond}
	ctx := context.Background()
	if _, err := a.Account(ctx, "jdoe"); err != nil {
		t.Fatal(err)
	}
	f.down.Store(true)
	if _, err := a.Refresh(ctx, "jdoe"); !errors.Is(err, kerberos.ErrNoKDC) {
		t.Fatalf("refresh without a KDC: %v", err)
	}
	if acct, err := a.Account(ctx, "jdoe"); err != nil || acct.User != "jdoe" {
		t.Fatalf("the good answer was lost: %+v %v", acct, err)
	}
}
