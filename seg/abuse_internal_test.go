package seg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segkcd/segkcd/kerberos"
)

// heldDirectory answers like sidDirectory, counts the questions and holds
// each until release is closed.
type heldDirectory struct {
	dir     sidDirectory
	calls   atomic.Int64
	release chan struct{}
}

func (d *heldDirectory) Account(ctx context.Context, name string) (*kerberos.Account, error) {
	d.calls.Add(1)
	if d.release != nil {
		<-d.release
	}
	return d.dir.Account(ctx, name)
}

func waitCalls(t *testing.T, d *heldDirectory, n int64) {
	t.Helper()
	for i := 0; d.calls.Load() < n; i++ {
		if i > 5000 {
			t.Fatalf("%d questions, want %d", d.calls.Load(), n)
		}
		runtimeGosched()
	}
}

// TestUnprovenNamesBudget: Basic login names not remembered are asked of
// the KDC MaxUnproven at a time, gateway-wide; past that they are refused
// at once without a question (issue 27: each random name cost one
// S4U2Self). Names from certificates and remembered names are not bounded.
func TestUnprovenNamesBudget(t *testing.T) {
	d := &heldDirectory{dir: sidDirectory{"ALICE": "S-1-5-21-7-1101"}, release: make(chan struct{})}
	b := &BasicAuth{Realm: "CORP.EXAMPLE.TEST", Names: Names{Realm: "CORP.EXAMPLE.TEST", Accounts: &Accounts{Resolver: d}}}
	login := func(name string, st sourceState) error {
		r := httptest.NewRequest(http.MethodPost, "/Microsoft-Server-ActiveSync?Cmd=Ping", nil)
		r = r.WithContext(context.WithValue(r.Context(), sourceKey{}, st))
		r.SetBasicAuth(name, "pw")
		_, err := b.Authenticate(r)
		return err
	}
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); login(fmt.Sprintf("random%d", i), sourceClean) }()
	}
	waitCalls(t, d, 2)
	// From sources that have failed before: turned away at once.
	for i := range 100 {
		if err := login(fmt.Sprintf("more%d", i), sourceFailed); !errors.Is(err, ErrNamesBusy) {
			t.Fatalf("past the budget: %v", err)
		}
	}
	// From a clean source: after waiting its moment.
	if err := login("clean", sourceClean); !errors.Is(err, ErrNamesBusy) {
		t.Fatalf("past the budget, a clean source: %v", err)
	}
	if n := d.calls.Load(); n != 2 {
		t.Errorf("100 names past the budget cost %d questions", n-2)
	}
	if got := statusFor(StageAuthenticate, loginNameError(ErrNamesBusy), true); got != http.StatusServiceUnavailable {
		t.Errorf("status %d", got)
	}
	// A certificate's name is asked all the same.
	wg.Add(1)
	go func() { defer wg.Done(); b.Names.Resolve(context.Background(), "alice") }()
	waitCalls(t, d, 3)
	close(d.release)
	wg.Wait()
	// Remembered: answered without a question, whatever is in flight.
	d.release = make(chan struct{})
	for i := range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); login(fmt.Sprintf("again%d", i), sourceClean) }()
	}
	waitCalls(t, d, 5)
	if acct, err := b.Names.resolveUnproven(context.Background(), "ALICE"); err != nil || acct.SID != "S-1-5-21-7-1101" {
		t.Errorf("a remembered name during a flood: %+v %v", acct, err)
	}
	close(d.release)
	wg.Wait()
}

// TestRefusalsApart: a flood of names no account holds, past every bound,
// never pushes a real user's answer out (issue 27: past 100,000 names the
// cache dropped a random tenth, real users included).
func TestRefusalsApart(t *testing.T) {
	d := &heldDirectory{dir: sidDirectory{"ALICE": "S-1-5-21-7-1101", "BOB": "S-1-5-21-7-1102"}}
	a := &Accounts{Resolver: d, MaxEntries: 10, MaxRefused: 100}
	ctx := context.Background()
	for _, n := range []string{"alice", "bob"} {
		if _, err := a.Account(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5000 {
		a.lookup(ctx, fmt.Sprintf("flood%d", i), 0, true)
	}
	before := d.calls.Load()
	for _, n := range []string{"alice", "bob"} {
		if _, err := a.Account(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if d.calls.Load() != before {
		t.Error("the flood pushed a real user's answer out")
	}
	if n := a.size(); n > 2+100 {
		t.Errorf("%d names remembered, bound 2+100", n)
	}
}

// TestFailedLoginsPerSource: a source that has spent its failed logins
// gets no more questions to the KDC for names or passwords (503 with
// Retry-After, no question); other sources are not touched, and an IPv6
// source is its /64.
func TestFailedLoginsPerSource(t *testing.T) {
	d := &heldDirectory{dir: sidDirectory{"ALICE": "S-1-5-21-7-1101"}}
	names := Names{Realm: "CORP.EXAMPLE.TEST", Accounts: &Accounts{Resolver: d}}
	b := &BasicAuth{Realm: "CORP.EXAMPLE.TEST", Names: names}
	up, _ := url.Parse("https://127.0.0.1:1")
	h := &ProxyHandler{Upstreams: []*Upstream{{URL: up}}, Tickets: noTickets{}, Authenticate: b.Authenticate,
		Names: names, FailedLoginBurst: 3, FailedLoginDelay: -1, Logger: discardLogger()}
	try := func(from, name string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/Microsoft-Server-ActiveSync?Cmd=Ping&User=x&DeviceId=d1&DeviceType=t", nil)
		r.RemoteAddr = from
		r.SetBasicAuth(name, "pw")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for i := range 3 {
		if w := try("192.0.2.7:1000", fmt.Sprintf("nobody%d", i)); w.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i, w.Code)
		}
	}
	for i := range 20 {
		w := try("192.0.2.7:1001", fmt.Sprintf("spent%d", i))
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
			t.Fatalf("spent source: %d %q", w.Code, w.Header().Get("Retry-After"))
		}
	}
	if n := d.calls.Load(); n != 3 {
		t.Errorf("a spent source cost %d questions", n-3)
	}
	if w := try("192.0.2.8:1000", "other"); w.Code != http.StatusUnauthorized || d.calls.Load() != 4 {
		t.Errorf("another source: %d, %d questions", w.Code, d.calls.Load())
	}
	for i := range 3 {
		try(fmt.Sprintf("[2001:db8:1:2::%x]:443", i+1), fmt.Sprintf("v6-%d", i))
	}
	if w := try("[2001:db8:1:2:ffff::9]:443", "v6-more"); w.Code != http.StatusServiceUnavailable {
		t.Errorf("the same /64: %d", w.Code)
	}
	if w := try("[2001:db8:1:3::1]:443", "v6-other"); w.Code != http.StatusUnauthorized {
		t.Errorf("another /64: %d", w.Code)
	}
	// Rotating through the /64s of one /48 spends the /48's allowance
	// (sharedScale sources' worth): a /64 of it that never failed is then
	// marked failed (half the budgets), not refused.
	for i := range 3*sharedScale + 1 {
		try(fmt.Sprintf("[2001:db8:2:%x::1]:443", i), fmt.Sprintf("rot-%d", i))
	}
	fresh, _ := source("[2001:db8:2:ffff::1]:443")
	if st := h.failed.state(fresh, time.Now()); st != sourceFailed {
		t.Errorf("a /64 of a spent /48: %v, want failed", st)
	}
	// A bucket that has filled up again is clean.
	f := &failedLogins{burst: 2, rate: 1, max: 10}
	one, _ := source("192.0.2.99:1")
	t0 := time.Now()
	f.failed(one, t0)
	if f.state(one, t0) != sourceFailed || f.state(one, t0.Add(3*time.Second)) != sourceClean {
		t.Error("a source whose failures have been earned back is not clean")
	}
	// Off: every failure asks.
	h2 := &ProxyHandler{Upstreams: h.Upstreams, Tickets: noTickets{}, Authenticate: b.Authenticate, Names: names, FailedLoginBurst: -1, FailedLoginDelay: -1, Logger: discardLogger()}
	for i := range 10 {
		r := httptest.NewRequest(http.MethodPost, "/Microsoft-Server-ActiveSync?Cmd=Ping&User=x&DeviceId=d1&DeviceType=t", nil)
		r.RemoteAddr = "192.0.2.7:1"
		r.SetBasicAuth(fmt.Sprintf("off%d", i), "pw")
		w := httptest.NewRecorder()
		h2.ServeHTTP(w, r)
		if w.Code != http.StatusUnauthorized {
			t.Fatalf("no limit: %d", w.Code)
		}
	}
}

type noTickets struct{}

func (noTickets) AccountTicket(context.Context, *kerberos.Account, string) (*kerberos.Ticket, error) {
	return nil, errors.New("no tickets here")
}
func (noTickets) InvalidateAccount(string, string) {}

func runtimeGosched() { time.Sleep(time.Millisecond) }

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestUnprovenBudgetFavoursCleanSources: a source with failed logins may
// find only half the budget in flight; a source without keeps the rest, so
// real users signing in for the first time are not all turned away by a
// flood whose sources have failed.
func TestUnprovenBudgetFavoursCleanSources(t *testing.T) {
	d := &heldDirectory{dir: sidDirectory{"ALICE": "S-1-5-21-7-1101", "BOB": "S-1-5-21-7-1102"}, release: make(chan struct{})}
	a := &Accounts{Resolver: d, MaxUnproven: 2}
	failed := context.WithValue(context.Background(), sourceKey{}, sourceFailed)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); a.lookup(failed, "flood1", 0, true) }()
	waitCalls(t, d, 1)
	if _, err := a.lookup(failed, "flood2", 0, true); !errors.Is(err, ErrNamesBusy) {
		t.Errorf("a failing source past half the budget: %v", err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); a.lookup(context.Background(), "alice", 0, true) }()
	waitCalls(t, d, 2)
	if _, err := a.lookup(context.Background(), "newcomer", 0, true); !errors.Is(err, ErrNamesBusy) {
		t.Errorf("a clean source past the whole budget: %v", err)
	}
	// Through Names, a clean source waits a moment for its turn, where a
	// failing one is turned away at once.
	names := Names{Realm: "CORP.EXAMPLE.TEST", Accounts: a}
	if _, err := names.resolveUnproven(failed, "flood3"); !errors.Is(err, ErrNamesBusy) {
		t.Errorf("a failing source through Names: %v", err)
	}
	got := make(chan error, 1)
	go func() { _, err := names.resolveUnproven(context.Background(), "bob"); got <- err }()
	time.Sleep(50 * time.Millisecond)
	close(d.release)
	if err := <-got; err != nil {
		t.Errorf("a clean source that waited its turn: %v", err)
	}
	wg.Wait()
}

// TestSharedSourceKeepsProvenPasswords (review of issue 27): a source spent
// by someone else's failures (a carrier NAT, an office) does not lock out a
// user whose password was right before, once its remembered answer has
// expired: a proven password is checked, a new one is not.
func TestSharedSourceKeepsProvenPasswords(t *testing.T) {
	b := &BasicAuth{Realm: "CORP.EXAMPLE.TEST", TTL: time.Millisecond}
	b.once.Do(b.init)
	acct := &kerberos.Account{User: "alice", SID: "S-1-5-21-7-1101"}
	k := b.keyFor(acct.SID+"\x00"+acct.User, "Right-Passw0rd!")
	b.proven[k] = time.Now().Add(time.Hour)
	spent := context.WithValue(context.Background(), sourceKey{}, sourceExhausted)
	if _, err := b.check(spent, acct, "Guess-Passw0rd!"); !errors.Is(err, ErrSourceLimited) {
		t.Errorf("a new password from a spent source: %v", err)
	}
	// The proven one goes to the KDC (none here: its error is the way to
	// the KDC's, not the source limit's).
	ctx, cancel := context.WithTimeout(spent, 2*time.Second)
	defer cancel()
	if _, err := b.check(ctx, acct, "Right-Passw0rd!"); errors.Is(err, ErrSourceLimited) || errors.Is(err, ErrPasswordsBusy) {
		t.Errorf("a proven password from a spent source: %v", err)
	}
}

// TestWrongPasswordsApart (review of issue 27): wrong answers are kept apart
// from right ones, so guesses never push out a user's right password.
func TestWrongPasswordsApart(t *testing.T) {
	b := &BasicAuth{Realm: "CORP.EXAMPLE.TEST", MaxEntries: 10}
	b.once.Do(b.init)
	right := &basicEntry{done: make(chan struct{}), expires: time.Now().Add(time.Hour)}
	close(right.done)
	k := b.keyFor("S-1-5-21-7-1101\x00alice", "Right-Passw0rd!")
	b.verdict[k] = right
	for i := range 1000 {
		e := &basicEntry{done: make(chan struct{}), err: ErrBadCredentials, expires: time.Now().Add(time.Hour)}
		close(e.done)
		b.mu.Lock()
		if len(b.wrong) >= b.maxEntries() {
			evictVerdicts(b.wrong, b.maxEntries(), time.Now())
		}
		b.wrong[b.keyFor(fmt.Sprintf("S-1-5-21-7-%d\x00u", i), "guess")] = e
		b.mu.Unlock()
	}
	if b.verdict[k] != right || len(b.wrong) > 10 {
		t.Errorf("right answer kept: %v; %d wrong answers, bound 10", b.verdict[k] == right, len(b.wrong))
	}
}

// TestAccountsEvictLeastUsed (review of issue 27): past MaxEntries, the
// names no request has found for longest go first; an account a device
// keeps using stays, however many other spellings come.
func TestAccountsEvictLeastUsed(t *testing.T) {
	dir := sidDirectory{"ALICE": "S-1-5-21-7-1101"}
	for i := range 500 {
		dir[fmt.Sprintf("SPELLING%d", i)] = fmt.Sprintf("S-1-5-21-7-%d", 2000+i)
	}
	a := &Accounts{Resolver: dir, MaxEntries: 50}
	ctx := context.Background()
	var asked []*kerberos.Account
	for i := range 500 {
		acct, err := a.Account(ctx, "alice") // the device's requests
		if err != nil {
			t.Fatal(err)
		}
		if len(asked) == 0 || asked[len(asked)-1] != acct {
			asked = append(asked, acct) // a new answer: alice was asked again
		}
		a.Account(ctx, fmt.Sprintf("spelling%d", i))
	}
	if len(asked) != 1 {
		t.Errorf("an account in use was evicted %d times by names found once", len(asked)-1)
	}
}

// TestSpentSourceNoOracle (second review of issue 27): from a spent source,
// every password not known right is refused the same way and charged to
// the account; once its allowance is spent, a right one is refused too, so
// guessing cannot find it. Other sources are not affected.
func TestSpentSourceNoOracle(t *testing.T) {
	b := &BasicAuth{Realm: "CORP.EXAMPLE.TEST"}
	b.once.Do(b.init)
	acct := &kerberos.Account{User: "alice", SID: "S-1-5-21-7-1101"}
	right := &basicEntry{done: make(chan struct{}), expires: time.Now().Add(time.Hour)}
	close(right.done)
	b.verdict[b.keyFor(acct.SID+"\x00"+acct.User, "Right-Passw0rd!")] = right
	spent := context.WithValue(context.Background(), sourceKey{}, sourceExhausted)
	if _, err := b.check(spent, acct, "Right-Passw0rd!"); err != nil {
		t.Fatalf("a remembered right password from a spent source: %v", err)
	}
	for i := range 100 {
		if _, err := b.check(spent, acct, fmt.Sprintf("Guess-%d!", i)); !errors.Is(err, ErrSourceLimited) {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	if _, err := b.check(spent, acct, "Right-Passw0rd!"); !errors.Is(err, ErrSourceLimited) {
		t.Errorf("after 100 guesses, the right password from a spent source was confirmed: %v", err)
	}
	if _, err := b.check(context.Background(), acct, "Right-Passw0rd!"); err != nil {
		t.Errorf("the right password from a clean source: %v", err)
	}
}
