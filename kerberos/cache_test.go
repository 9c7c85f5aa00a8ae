package kerberos

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/types"
)

// fakeSource counts calls and returns tickets valid for life, or err.
type fakeSource struct {
	calls atomic.Int64
	now   func() time.Time
	life  time.Duration
	err   error
	gate  chan struct{} // when set, each call waits for it
}

func (f *fakeSource) Impersonate(ctx context.Context, user, spn string) (*Ticket, error) {
	f.calls.Add(1)
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.err != nil {
		return nil, f.err
	}
	return &Ticket{Client: types.PrincipalName{NameString: []string{user}}, EndTime: f.now().Add(f.life)}, nil
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestCacheReuseAndExpiry(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	src := &fakeSource{now: clk.Now, life: time.Hour}
	c := &Cache{Source: src, clock: clk.Now, Skew: 5 * time.Minute}
	ctx := context.Background()
	t1, err := c.Ticket(ctx, "alice", "http/mail")
	if err != nil {
		t.Fatal(err)
	}
	t2, _ := c.Ticket(ctx, "alice", "http/mail")
	if t1 != t2 || src.calls.Load() != 1 {
		t.Fatalf("not reused: calls=%d", src.calls.Load())
	}
	// Keys are exact: another spelling is another entry, never another's ticket.
	if t3, _ := c.Ticket(ctx, "ALICE", "http/mail"); t3 == t1 || src.calls.Load() != 2 {
		t.Fatalf("ALICE shares alice's entry: calls=%d", src.calls.Load())
	}
	if _, err := c.Ticket(ctx, "bob", "http/mail"); err != nil || src.calls.Load() != 3 {
		t.Fatal("bob shares alice's ticket")
	}
	clk.Add(30 * time.Minute) // half-way: served, no refresh yet
	if t3, _ := c.Ticket(ctx, "alice", "http/mail"); t3 != t1 || c.Stats().Refreshes != 0 {
		t.Fatal("refetched too early")
	}
	clk.Add(26 * time.Minute) // 4 minutes left, inside the skew: refetch
	if t4, _ := c.Ticket(ctx, "alice", "http/mail"); t4 == t1 || src.calls.Load() != 4 {
		t.Fatalf("not refetched: calls=%d", src.calls.Load())
	}
	c.Invalidate("alice", "http/mail")
	c.Ticket(ctx, "alice", "http/mail")
	if src.calls.Load() != 5 {
		t.Fatal("Invalidate did not refetch")
	}
	s := c.Stats()
	if s.Hits != 2 || s.Misses != 5 || s.Exchanges != 5 || s.Entries != 3 {
		t.Fatalf("stats %+v", s)
	}
}

// Tickets that all end with the service TGT are refreshed ahead, each at
// its own point, while the cached one is still served: no window without
// a ticket, and no stampede at the end.
func TestCacheRefreshAhead(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	src := &fakeSource{now: clk.Now, life: time.Hour}
	c := &Cache{Source: src, clock: clk.Now, Skew: 5 * time.Minute}
	ctx := context.Background()
	users := []string{"u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7"}
	first := map[string]*Ticket{}
	for _, u := range users {
		first[u], _ = c.Ticket(ctx, u, "http/mail")
	}
	// Walk through the refresh window (80-90% of 55 usable minutes) a minute at a time.
	refreshedAt := map[string]int{}
	for m := 1; m <= 54; m++ {
		clk.Add(time.Minute)
		for _, u := range users {
			tk, err := c.Ticket(ctx, u, "http/mail")
			if err != nil || tk == nil {
				t.Fatalf("minute %d: %s got no ticket: %v", m, u, err)
			}
			if _, done := refreshedAt[u]; !done && tk != first[u] {
				refreshedAt[u] = m
			}
		}
		waitIdle(t, c)
	}
	if len(refreshedAt) != len(users) {
		t.Fatalf("refreshed %v", refreshedAt)
	}
	distinct := map[int]bool{}
	for u, m := range refreshedAt {
		if m < 44 || m > 51 {
			t.Fatalf("%s refreshed at minute %d, outside 80-90%% of its life", u, m)
		}
		distinct[m] = true
	}
	if len(distinct) < 2 {
		t.Fatalf("every refresh in one minute: %v", refreshedAt)
	}
	if s := c.Stats(); s.Refreshes != int64(len(users)) || s.Misses != int64(len(users)) {
		t.Fatalf("stats %+v", s)
	}
}

// waitIdle waits for background refreshes, queued or running, to finish.
func waitIdle(t *testing.T, c *Cache) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		c.mu.Lock()
		n := len(c.inflight) + c.due.Len() + c.workers
		c.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("refresh still running")
}

// A refresh ahead that fails, refused or not answered, keeps the ticket
// being served and is not asked again on every hit.
func TestCacheRefreshRefused(t *testing.T) {
	for _, fail := range []error{&KDCError{Op: "S4U2Self", Code: CodePolicy}, ErrNoKDC} {
		clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
		src := &fakeSource{now: clk.Now, life: time.Hour}
		c := &Cache{Source: src, clock: clk.Now}
		ctx := context.Background()
		t1, _ := c.Ticket(ctx, "alice", "http/mail")
		// The fetch stores the ticket (and its refresh point, from the clock)
		// after waking its waiter: let it finish before the clock moves.
		waitIdle(t, c)
		src.err = fail
		clk.Add(52 * time.Minute)
		for i := 0; i < 3; i++ {
			if tk, err := c.Ticket(ctx, "alice", "http/mail"); tk != t1 || err != nil {
				t.Fatalf("%v replaced a valid ticket: %v", fail, err)
			}
			waitIdle(t, c)
		}
		if s := c.Stats(); src.calls.Load() != 2 || s.RefreshErrors != 1 {
			t.Fatalf("%v: refresh retried on every hit: %d calls, %+v", fail, src.calls.Load(), s)
		}
	}
}

// orderSource records the order of its calls and holds those for users
// named in hold until release is closed, counting how many it holds at once.
type orderSource struct {
	now           func() time.Time
	release       chan struct{}
	mu            sync.Mutex
	calls         []string
	running, peak int
}

func (s *orderSource) Impersonate(ctx context.Context, user, spn string) (*Ticket, error) {
	s.mu.Lock()
	s.calls = append(s.calls, user)
	hold := user[0] == 'u' && s.release != nil
	if hold {
		s.running++
		s.peak = max(s.peak, s.running)
	}
	s.mu.Unlock()
	if hold {
		<-s.release
		s.mu.Lock()
		s.running--
		s.mu.Unlock()
	}
	return &Ticket{Client: types.PrincipalName{NameString: []string{user}}, EndTime: s.now().Add(time.Hour)}, nil
}

// Refreshes that come due together wait in the Cache, the earliest
// ticket end first, MaxRefreshes at a time; a request without a ticket
// does not wait behind them.
func TestCacheRefreshesBounded(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := &clock{t: start}
	src := &orderSource{now: clk.Now}
	c := &Cache{Source: src, clock: clk.Now, Skew: 5 * time.Minute, MaxRefreshes: 1}
	ctx := context.Background()
	const n = 10
	for i := 0; i < n; i++ { // u0's ticket ends first, u9's last
		clk.Add(10 * time.Second)
		c.Ticket(ctx, fmt.Sprintf("u%d", i), "http/mail")
	}
	waitIdle(t, c)
	src.release = make(chan struct{})
	src.calls = nil
	clk.Add(52 * time.Minute) // past every refresh point (at most 49.5 min), before any margin
	for i := n - 1; i >= 0; i-- {
		if _, err := c.Ticket(ctx, fmt.Sprintf("u%d", i), "http/mail"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { src.mu.Lock(); defer src.mu.Unlock(); return src.running == 1 })
	// A user without a ticket is served while the refresh slot is taken.
	got := make(chan error, 1)
	go func() { _, err := c.Ticket(ctx, "v", "http/mail"); got <- err }()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a miss waited behind the refreshes")
	}
	if s := c.Stats(); s.RefreshesWaiting != n-1 || s.Refreshes != 1 {
		t.Fatalf("stats while one refresh runs: %+v", s)
	}
	close(src.release)
	waitIdle(t, c)
	src.mu.Lock()
	defer src.mu.Unlock()
	if src.peak != 1 {
		t.Fatalf("%d refreshes at once, MaxRefreshes is 1", src.peak)
	}
	var order []string
	for _, u := range src.calls {
		if u != "v" {
			order = append(order, u)
		}
	}
	// The first refresh is whichever the worker found first; the rest go by
	// the end of their tickets.
	if len(order) != n {
		t.Fatalf("refreshed %v", order)
	}
	for i := 2; i < n; i++ {
		if order[i] < order[i-1] {
			t.Fatalf("refreshed out of order: %v", order)
		}
	}
	if s := c.Stats(); s.Refreshes != n || s.RefreshesLate != 0 || s.RefreshesWaiting != 0 {
		t.Fatalf("%+v", s)
	}
}

// A refresh still waiting when its ticket reaches the margin is dropped and
// counted: the next request fetches.
func TestCacheRefreshLate(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	src := &orderSource{now: clk.Now}
	c := &Cache{Source: src, clock: clk.Now, Skew: 5 * time.Minute, MaxRefreshes: 1}
	ctx := context.Background()
	old, _ := c.Ticket(ctx, "u0", "http/mail")
	c.Ticket(ctx, "u1", "http/mail")
	waitIdle(t, c)
	src.release = make(chan struct{})
	clk.Add(52 * time.Minute)
	c.Ticket(ctx, "u0", "http/mail")
	c.Ticket(ctx, "u1", "http/mail")
	waitFor(t, func() bool { src.mu.Lock(); defer src.mu.Unlock(); return src.running == 1 })
	clk.Add(4 * time.Minute) // both tickets inside their margin
	close(src.release)
	waitIdle(t, c)
	if s := c.Stats(); s.Refreshes != 1 || s.RefreshesLate != 1 {
		t.Fatalf("%+v", s)
	}
	for _, u := range []string{"u0", "u1"} {
		if tk, err := c.Ticket(ctx, u, "http/mail"); err != nil || tk == old || !clk.Now().Add(5*time.Minute).Before(tk.EndTime) {
			t.Fatalf("%s: %v", u, err)
		}
	}
}

// confusedSource answers every user with the ticket of one account, as a
// case-folding cache in front of the KDC would.
type confusedSource struct{ name string }

func (s confusedSource) Impersonate(ctx context.Context, user, spn string) (*Ticket, error) {
	return &Ticket{Client: types.PrincipalName{NameType: 1, NameString: []string{s.name}}, ClientRealm: "CORP.EXAMPLE.TEST",
		EndTime: time.Now().Add(time.Hour)}, nil
}

func TestCacheRefusesAnotherUsersTicket(t *testing.T) {
	c := &Cache{Source: confusedSource{name: "kelly"}}
	ctx := context.Background()
	if _, err := c.Ticket(ctx, "kelly", "http/mail"); err != nil {
		t.Fatal(err)
	}
	// U+212A KELVIN SIGN: ToLower and EqualFold make it "k"; AD does not.
	_, err := c.Ticket(ctx, "\u212aelly", "http/mail")
	if !errors.Is(err, ErrBadReply) || c.Stats().Mismatches != 1 {
		t.Fatalf("served kelly's ticket to Kelvin-kelly: %v %+v", err, c.Stats())
	}
	for _, tc := range []struct {
		a, b string
		same bool
	}{{"kelly", "KELLY", true}, {"kelly", "\u212aelly", false}, {"\u212aelly", "\u212aELLY", true},
		{"stra\u00dfe", "STRA\u00dfE", true}, {"a", "\u0430", false}, {"x", "xy", false}} {
		if got := EqualNames(tc.a, tc.b); got != tc.same {
			t.Errorf("EqualNames(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
}

func TestCacheNegative(t *testing.T) {
	clk := &clock{t: time.Unix(1e9, 0)}
	refusal := &KDCError{Op: "S4U2Proxy", Code: CodeBadOption}
	src := &fakeSource{now: clk.Now, life: time.Hour, err: refusal}
	c := &Cache{Source: src, clock: clk.Now, NegativeTTL: 10 * time.Second}
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := c.Ticket(ctx, "carol", "http/mail"); !errors.Is(err, ErrNotDelegable) {
			t.Fatal(err)
		}
	}
	if src.calls.Load() != 1 || c.Stats().NegativeHits != 2 {
		t.Fatalf("refusal not remembered: calls=%d %+v", src.calls.Load(), c.Stats())
	}
	clk.Add(11 * time.Second)
	c.Ticket(ctx, "carol", "http/mail")
	if src.calls.Load() != 2 {
		t.Fatal("refusal remembered past NegativeTTL")
	}
	// Transport failures are not remembered.
	src.err = ErrNoKDC
	c.Invalidate("carol", "http/mail")
	c.Ticket(ctx, "carol", "http/mail")
	c.Ticket(ctx, "carol", "http/mail")
	if src.calls.Load() != 4 {
		t.Fatalf("transport error cached: calls=%d", src.calls.Load())
	}
	// Nor are the KDC's answers about the service's TGT or its own load:
	// they say nothing about carol.
	for _, code := range []int32{CodeTktExpired, CodeTGTRevoked, CodeSvcUnavailable} {
		src.err = &KDCError{Op: "S4U2Self", Code: code}
		n := src.calls.Load()
		c.Ticket(ctx, "carol", "http/mail")
		c.Ticket(ctx, "carol", "http/mail")
		if src.calls.Load() != n+2 {
			t.Fatalf("KDC error %d remembered for the user", code)
		}
	}
}

func TestCacheCollapseAndCancel(t *testing.T) {
	src := &fakeSource{now: time.Now, life: time.Hour, gate: make(chan struct{})}
	c := &Cache{Source: src}
	// The first caller gives up; the others still get the ticket.
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { _, err := c.Ticket(ctx, "alice", "http/mail"); first <- err }()
	for src.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	var wg sync.WaitGroup
	var ok atomic.Int64
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Ticket(context.Background(), "alice", "http/mail"); err == nil {
				ok.Add(1)
			}
		}()
	}
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("first caller: %v", err)
	}
	time.Sleep(10 * time.Millisecond)
	close(src.gate)
	wg.Wait()
	if ok.Load() != 100 || src.calls.Load() != 1 {
		t.Fatalf("ok=%d calls=%d", ok.Load(), src.calls.Load())
	}
}

func TestCacheBounded(t *testing.T) {
	src := &fakeSource{now: time.Now, life: time.Hour}
	c := &Cache{Source: src, MaxEntries: 3}
	ctx := context.Background()
	for _, u := range []string{"a", "b", "c"} {
		c.Ticket(ctx, u, "s")
	}
	c.Ticket(ctx, "a", "s") // a is now the most recent
	c.Ticket(ctx, "d", "s") // evicts b
	if s := c.Stats(); s.Entries != 3 || s.Evictions != 1 {
		t.Fatalf("%+v", s)
	}
	calls := src.calls.Load()
	c.Ticket(ctx, "a", "s")
	c.Ticket(ctx, "b", "s")
	if src.calls.Load() != calls+1 {
		t.Fatal("evicted the wrong entry")
	}
}

// Tickets of a few minutes (a krb5.conf ticket_lifetime of 3m) are served
// from the cache with the default margin, a tenth of their life, and
// refreshed once in the last fifth of what is left; with a margin of 5
// minutes every request would have gone to the KDC.
func TestCacheShortTickets(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	src := &fakeSource{now: clk.Now, life: 3 * time.Minute}
	short := &shortSource{fakeSource: src}
	c := &Cache{Source: short, clock: clk.Now}
	ctx := context.Background()
	first, err := c.Ticket(ctx, "alice", "http/mail")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		clk.Add(10 * time.Second) // 100 s in: under 80% of 162 s usable
		if i == 9 {
			break
		}
		if got, _ := c.Ticket(ctx, "alice", "http/mail"); got != first {
			t.Fatalf("after %v a new ticket", time.Duration(i+1)*10*time.Second)
		}
	}
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("%d exchanges in the first 90 s of a 3-minute ticket, want 1", n)
	}
	clk.Add(50 * time.Second) // 150 s: past 90% of the usable 162 s, before the margin
	if got, _ := c.Ticket(ctx, "alice", "http/mail"); got != first {
		t.Fatal("the ticket in hand was not served while its refresh runs")
	}
	waitFor(t, func() bool { return c.Stats().Refreshes == 1 && src.calls.Load() == 2 })
	clk.Add(15 * time.Second) // 165 s: inside the 18 s margin of the first ticket
	if got, _ := c.Ticket(ctx, "alice", "http/mail"); got == first {
		t.Fatal("a ticket inside its margin was served")
	}
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("%d exchanges, want 2", n)
	}
}

// shortSource gives its tickets a start time, as the KDC's do, so their
// lifetime is known.
type shortSource struct{ *fakeSource }

func (s *shortSource) Impersonate(ctx context.Context, user, spn string) (*Ticket, error) {
	t, err := s.fakeSource.Impersonate(ctx, user, spn)
	if t != nil {
		t.StartTime = s.now()
	}
	return t, err
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for i := 0; i < 500 && !ok(); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if !ok() {
		t.Fatal("timed out")
	}
}

// accountSource is a fakeSource that checks SIDs: owner maps names to the
// SID that holds them now.
type accountSource struct {
	fakeSource
	mu    sync.Mutex
	owner map[string]string
}

func (a *accountSource) ImpersonateAccount(ctx context.Context, acct *Account, spn string) (*Ticket, error) {
	a.mu.Lock()
	sid := a.owner[acct.User]
	a.mu.Unlock()
	if sid != acct.SID {
		return nil, &Error{Op: "S4U2Self", Target: acct.User, Err: ErrAccountChanged}
	}
	return a.Impersonate(ctx, acct.User, spn)
}

// TestCacheAccountTicket: tickets keyed by SID are shared by the account's
// names, never fetched for a name that has passed to another SID (the
// refusal is not remembered: the account's next name gets its ticket at
// once), and refused outright by a Source that cannot check SIDs.
func TestCacheAccountTicket(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	src := &accountSource{fakeSource: fakeSource{now: clk.Now, life: 10 * time.Hour}, owner: map[string]string{"jsmith": "S-1-5-21-1-1"}}
	c := &Cache{Source: src, clock: clk.Now}
	ctx := context.Background()
	a := &Account{User: "jsmith", SID: "S-1-5-21-1-1"}
	if _, err := c.AccountTicket(ctx, a, "http/mail"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AccountTicket(ctx, &Account{User: "JSMITH", SID: "S-1-5-21-1-1"}, "http/mail"); err != nil || src.calls.Load() != 1 {
		t.Fatalf("another name of the same SID: %v, %d exchanges", err, src.calls.Load())
	}
	// jsmith is renamed jsmith2; a new account takes jsmith.
	src.mu.Lock()
	src.owner = map[string]string{"jsmith": "S-1-5-21-1-2", "jsmith2": "S-1-5-21-1-1"}
	src.mu.Unlock()
	c.InvalidateAccount("S-1-5-21-1-1", "http/mail")
	if _, err := c.AccountTicket(ctx, a, "http/mail"); !errors.Is(err, ErrAccountChanged) {
		t.Fatalf("a name that passed to another SID: %v", err)
	}
	if _, err := c.AccountTicket(ctx, &Account{User: "jsmith2", SID: "S-1-5-21-1-1"}, "http/mail"); err != nil {
		t.Fatalf("the account's new name: %v", err)
	}
	if _, err := (&Cache{Source: &fakeSource{now: clk.Now, life: time.Hour}}).AccountTicket(ctx, a, "http/mail"); err == nil {
		t.Error("a Source that cannot check SIDs served a ticket keyed by one")
	}
	if _, err := c.AccountTicket(ctx, &Account{User: "jsmith"}, "http/mail"); err == nil {
		t.Error("an account without a SID")
	}
}

// enterpriseSource answers as ImpersonateAccount does after an S4U2Self by
// UPN: the ticket's client is the enterprise name, and its SID the one the
// evidence's PAC named (pacSID, or the account's when empty).
type enterpriseSource struct {
	fakeSource
	pacSID string
}

func (e *enterpriseSource) ImpersonateAccount(ctx context.Context, acct *Account, spn string) (*Ticket, error) {
	t, err := e.Impersonate(ctx, acct.User, spn)
	if err != nil {
		return nil, err
	}
	t.Client = types.PrincipalName{NameType: nametype.KRB_NT_ENTERPRISE, NameString: []string{acct.User + "@corp.example.com"}}
	t.SID = acct.SID
	if e.pacSID != "" {
		t.SID = e.pacSID
	}
	return t, nil
}

// TestCacheChecksTheEvidenceSID: a ticket keyed by SID whose client is an
// enterprise name is served when its evidence's PAC named that SID, and
// refused, never cached, when it named another.
func TestCacheChecksTheEvidenceSID(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	ctx := context.Background()
	a := &Account{User: "jsmith", SID: "S-1-5-21-1-1"}
	src := &enterpriseSource{fakeSource: fakeSource{now: clk.Now, life: time.Hour}}
	c := &Cache{Source: src, clock: clk.Now}
	for i := 0; i < 2; i++ {
		tk, err := c.AccountTicket(ctx, a, "http/mail")
		if err != nil || tk.IsFor("jsmith") || tk.SID != a.SID {
			t.Fatalf("call %d: %v %v", i, tk, err)
		}
	}
	if src.calls.Load() != 1 || c.Stats().Mismatches != 0 {
		t.Fatalf("%d exchanges, %d mismatches; want 1 and 0", src.calls.Load(), c.Stats().Mismatches)
	}
	other := &enterpriseSource{fakeSource: fakeSource{now: clk.Now, life: time.Hour}, pacSID: "S-1-5-21-1-2"}
	c = &Cache{Source: other, clock: clk.Now}
	for i := 0; i < 2; i++ {
		if tk, err := c.AccountTicket(ctx, a, "http/mail"); !errors.Is(err, ErrBadReply) || tk != nil {
			t.Fatalf("a ticket whose evidence named another SID: %v %v", tk, err)
		}
	}
	if other.calls.Load() != 2 || c.Stats().Mismatches != 2 {
		t.Fatalf("%d exchanges, %d mismatches; want 2 and 2 (never cached)", other.calls.Load(), c.Stats().Mismatches)
	}
}
