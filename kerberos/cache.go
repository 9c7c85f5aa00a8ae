package kerberos

import (
	"container/heap"
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Impersonator gets a ticket from user to spn. *Client is one.
type Impersonator interface {
	Impersonate(ctx context.Context, user, spn string) (*Ticket, error)
}

// AccountImpersonator gets a ticket from an account the directory resolved
// to spn, checking that the name it asks the KDC for (acct.User) still
// belongs to that account (acct.SID). *Client is one.
type AccountImpersonator interface {
	ImpersonateAccount(ctx context.Context, acct *Account, spn string) (*Ticket, error)
}

// TicketSource supplies a ticket for one fixed user and SPN, like
// oauth2.TokenSource supplies tokens.
type TicketSource interface {
	Ticket(ctx context.Context) (*Ticket, error)
}

// Cache keeps S4U2Proxy tickets per (user, SPN) until they are about to
// expire, like oauth2.ReuseTokenSource does for one token. Concurrent misses
// for the same key share one KDC exchange; KDC refusals are remembered for
// a short while so a misconfigured user cannot make every request hit the
// KDC; the number of entries is bounded (least recently used go first).
//
// Keys are the user and SPN exactly as given: no case folding, because
// folding can join two names that AD keeps apart (strings.ToLower takes the
// Kelvin sign U+212A for "k", and AD has "kelly" and "\u212aelly" as two
// accounts). "Alice" and "alice" then cost one exchange each; callers that
// want one entry per account pass canonical names. Every ticket served,
// from the cache or fresh, is checked to speak for the user asked for
// (Ticket.IsFor).
//
// A ticket is refreshed ahead of its end: once 80-90% (chosen at random per
// entry) of its usable life has passed, a hit still serves it and queues
// a background exchange for a new one. Together with the Client's early
// TGT renewal (tickets end no later than the TGT they came from) this means
// that tickets of many users are not all missing in the same second.
//
// Background refreshes are bounded (MaxRefreshes in flight) and wait in the
// Cache, the ticket ending first going first, rather than at the KDC: users
// whose tickets were all fetched in the same few minutes come due together
// again one lifetime later, and a KDC handed thousands of requests at once
// answers each of them late (measured on Samba: refreshes timed out in its
// queue and were asked again, tripling its work). A request that finds no
// usable ticket is never queued behind refreshes: its exchange starts at
// once.
//
// Set the fields before first use; the zero value of each means its
// default. Methods are safe for concurrent use.
type Cache struct {
	// Source performs the exchange on a miss (typically a *Client).
	Source Impersonator
	// Skew: a ticket is not served once less than Skew remains, so it does
	// not expire on its way to Exchange. The default is 5 minutes, or a
	// tenth of the ticket's lifetime when that is shorter.
	Skew time.Duration
	// NegativeTTL: how long a KDC refusal is served from the cache (default
	// 15s). Transport failures and cancellations are never cached.
	NegativeTTL time.Duration
	// MaxEntries bounds the cache (default 10000).
	MaxEntries int
	// FetchTimeout bounds one shared exchange, which outlives the request
	// that started it so that other waiters are not failed by its
	// cancellation (default 30s).
	FetchTimeout time.Duration
	// MaxRefreshes bounds the background refreshes in flight (default 8).
	// Refreshes past it wait in the Cache, earliest ticket end first; one
	// still waiting when its ticket reaches the Skew margin is dropped, and
	// the next request for that ticket fetches a new one itself.
	MaxRefreshes int
	// clock replaces time.Now in tests of this package.
	clock func() time.Time

	mu       sync.Mutex
	entries  map[cacheKey]*list.Element
	lru      list.List // front = most recent; values are *cacheEntry
	inflight map[cacheKey]*fetch
	due      refreshQueue // refreshes waiting for a slot
	workers  int          // goroutines running refreshes

	hits, misses, negativeHits, exchanges, errs, evictions, refreshes, mismatches atomic.Int64
	refreshErrs, refreshesLate                                                    atomic.Int64
}

// cacheKey is a user name (Ticket) or, with sid set, an account's SID
// (AccountTicket): the two never meet, since a name is never a SID's key.
type cacheKey struct {
	user, spn string
	sid       bool
}

type cacheEntry struct {
	key       cacheKey
	name      string // what S4U2Self asks for: key.user, or the account's name
	ticket    *Ticket
	refreshAt time.Time // when a hit queues a background refresh
	queued    *refresh  // the refresh waiting for a slot, if any
	err       error     // a remembered KDC refusal
	expires   time.Time // for err entries
}

// refresh is a background refresh waiting for a slot.
type refresh struct {
	entry    *cacheEntry
	deadline time.Time // when the ticket enters its margin
	index    int       // in the heap
}

// refreshQueue is a heap of waiting refreshes, earliest deadline first.
type refreshQueue []*refresh

func (q refreshQueue) Len() int           { return len(q) }
func (q refreshQueue) Less(i, j int) bool { return q[i].deadline.Before(q[j].deadline) }
func (q refreshQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}
func (q *refreshQueue) Push(x any) {
	r := x.(*refresh)
	r.index = len(*q)
	*q = append(*q, r)
}
func (q *refreshQueue) Pop() any {
	old := *q
	r := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	r.index = -1
	return r
}

type fetch struct {
	done   chan struct{}
	ticket *Ticket
	err    error
}

// CacheStats are counters a caller can export.
type CacheStats struct {
	Hits         int64 // served a cached ticket
	NegativeHits int64 // served a remembered refusal
	Misses       int64 // had to wait for an exchange (own or shared)
	Exchanges    int64 // exchanges with the KDC (each S4U2Self + S4U2Proxy)
	Errors       int64 // exchanges that failed (background refreshes included)
	Evictions    int64 // entries dropped for MaxEntries
	Refreshes    int64 // background refreshes started ahead of a ticket's end
	// RefreshErrors counts background refreshes that failed; the ticket in
	// hand is served until its margin, and a later hit asks again.
	RefreshErrors int64
	// RefreshesLate counts refreshes dropped because their ticket reached
	// its margin while they waited for a slot (MaxRefreshes): the KDC is
	// slower than the tickets come due.
	RefreshesLate int64
	// RefreshesWaiting is the number of refreshes waiting for a slot now.
	RefreshesWaiting int
	Mismatches       int64 // tickets refused because they did not speak for the user asked for
	Entries          int   // entries now
}

func (c *Cache) now() time.Time {
	if c.clock != nil {
		return c.clock()
	}
	return time.Now()
}

// skew is the margin for t: Skew, or by default 5 minutes but at most a
// tenth of t's lifetime (a realm with tickets of a few minutes would
// otherwise find each one inside the margin as it arrives, and ask the KDC
// on every request).
func (c *Cache) skew(t *Ticket) time.Duration {
	if c.Skew > 0 {
		return c.Skew
	}
	return defaultMargin(t)
}

func key(user, spn string) cacheKey { return cacheKey{user: user, spn: spn} }

// Ticket returns a valid ticket from user to spn, from the cache or from
// one shared exchange with the KDC.
func (c *Cache) Ticket(ctx context.Context, user, spn string) (*Ticket, error) {
	return c.ticket(ctx, key(user, spn), user)
}

// AccountTicket returns a valid ticket from the account acct (as
// Client.Account resolved it) to spn. Its entry is keyed by the account's
// SID, not by a name: every name of one account shares it, and no exchange
// for a name that AD has given to another account since (a rename, a UPN
// moved) is ever stored under the SID it left. Whether acct is the right
// account for a request is the caller's to know: the cache serves the SID
// it is given. The exchange asks the KDC
// for acct.User and, when Source is an AccountImpersonator (a *Client),
// checks the evidence ticket's PAC against acct.SID: a name that now belongs
// to someone else fails with ErrAccountChanged. A Source that cannot check
// (no AccountImpersonator) fails every AccountTicket.
func (c *Cache) AccountTicket(ctx context.Context, acct *Account, spn string) (*Ticket, error) {
	if acct == nil || acct.SID == "" || acct.User == "" {
		return nil, &Error{Op: "cache", Err: errors.New("an account without a SID or a name")}
	}
	return c.ticket(ctx, cacheKey{user: acct.SID, spn: spn, sid: true}, acct.User)
}

// InvalidateAccount drops the ticket (or refusal) of the account with sid
// for spn, e.g. after Exchange answered 401 to it.
func (c *Cache) InvalidateAccount(sid, spn string) {
	c.invalidate(cacheKey{user: sid, spn: spn, sid: true})
}

// speaksFor reports whether t may be served for k, asked of the KDC for the
// name user. A ticket keyed by a SID whose evidence's PAC was read
// (Ticket.SID) is checked by that SID: its client name may be another form
// of the account's name (an enterprise name). Any other ticket must be for
// user by name.
func speaksFor(t *Ticket, k cacheKey, user string) bool {
	if k.sid && t.SID != "" {
		return t.SID == k.user
	}
	return t.IsFor(user)
}

func (c *Cache) ticket(ctx context.Context, k cacheKey, user string) (*Ticket, error) {
	c.mu.Lock()
	if c.entries == nil {
		c.entries = map[cacheKey]*list.Element{}
		c.inflight = map[cacheKey]*fetch{}
	}
	now := c.now()
	if el, ok := c.entries[k]; ok {
		e := el.Value.(*cacheEntry)
		switch {
		case e.ticket != nil && !speaksFor(e.ticket, k, e.name):
			// Never expected with exact keys; a ticket for someone else is never served.
			c.mismatches.Add(1)
		case e.ticket != nil && now.Add(c.skew(e.ticket)).Before(e.ticket.EndTime):
			c.lru.MoveToFront(el)
			if !now.Before(e.refreshAt) && e.queued == nil {
				if _, busy := c.inflight[k]; !busy {
					c.queueLocked(e)
				}
			}
			c.mu.Unlock()
			c.hits.Add(1)
			return e.ticket, nil
		case e.err != nil && now.Before(e.expires):
			c.mu.Unlock()
			c.negativeHits.Add(1)
			return nil, e.err
		}
		c.removeLocked(el)
	}
	c.misses.Add(1)
	f, ok := c.inflight[k]
	if !ok {
		f = &fetch{done: make(chan struct{})}
		c.inflight[k] = f
		go c.run(ctx, k, user, f, false)
	}
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.ticket, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// run performs one exchange for all waiters of a key; background says it is
// a refresh ahead, which nobody waits for.
func (c *Cache) run(ctx context.Context, k cacheKey, user string, f *fetch, background bool) {
	timeout := c.FetchTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	c.exchanges.Add(1)
	var t *Ticket
	var err error
	ai, checks := c.Source.(AccountImpersonator)
	switch {
	case k.sid && checks:
		t, err = ai.ImpersonateAccount(fctx, &Account{User: user, SID: k.user}, k.spn)
	case k.sid:
		// A ticket keyed by a SID must be checked for it.
		err = &Error{Op: "cache", Target: user, Err: errors.New("the Source cannot check an account's SID (it is no AccountImpersonator)")}
	default:
		t, err = c.Source.Impersonate(fctx, user, k.spn)
	}
	if err == nil && (t == nil || !speaksFor(t, k, user)) {
		c.mismatches.Add(1)
		name := "no ticket"
		if t != nil {
			name = "a ticket for " + t.ClientName()
		}
		err = &Error{Op: "cache", Target: user, Err: fmt.Errorf("%w: the source returned %s", ErrBadReply, name)}
		t = nil
	}
	if err != nil {
		c.errs.Add(1)
		if background {
			c.refreshErrs.Add(1)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.inflight, k)
	f.ticket, f.err = t, err
	// The waiters wake once the entry is stored, with its times taken from
	// the clock as it was when the answer came.
	defer close(f.done)
	if err == nil {
		c.storeLocked(&cacheEntry{key: k, name: user, ticket: t, refreshAt: c.refreshPoint(t)})
		return
	}
	ttl := c.NegativeTTL
	if ttl <= 0 {
		ttl = 15 * time.Second
	}
	if el, ok := c.entries[k]; ok {
		if e := el.Value.(*cacheEntry); e.ticket != nil && c.now().Add(c.skew(e.ticket)).Before(e.ticket.EndTime) {
			// A refresh ahead failed: keep serving the ticket we have,
			// and ask again after the negative TTL rather than on the
			// next hit (a KDC that is down or busy is not helped by
			// every request asking it again).
			e.refreshAt = c.now().Add(ttl)
			return
		}
	}
	if refusal(err) {
		c.storeLocked(&cacheEntry{key: k, name: user, err: err, expires: c.now().Add(ttl)})
	}
}

// refreshPoint is when a hit on t starts a background refresh: at a random
// point between 80% and 90% of the time from now to the end of its use.
func (c *Cache) refreshPoint(t *Ticket) time.Time {
	now := c.now()
	usable := t.EndTime.Add(-c.skew(t)).Sub(now)
	if usable <= 0 {
		return now
	}
	return now.Add(time.Duration(float64(usable) * (0.8 + 0.1*randFloat())))
}

// refusal reports whether err is the KDC's (or our pre-flight) answer about
// this user or SPN, which asking again soon would not change. A KDC's
// refusal of the service's own TGT (which the Client has already logged in
// again for, once) and a busy KDC say nothing about the user: remembering
// them would fail the user's requests for NegativeTTL after the KDC is
// well again.
func refusal(err error) bool {
	var ke *KDCError
	if errors.As(err, &ke) {
		return !rejectsTGT(ke.Code) && ke.Code != CodeSvcUnavailable
	}
	return errors.Is(err, ErrEvidenceNotForwardable)
}

func (c *Cache) storeLocked(e *cacheEntry) {
	if el, ok := c.entries[e.key]; ok {
		c.removeLocked(el)
	}
	c.entries[e.key] = c.lru.PushFront(e)
	max := c.MaxEntries
	if max <= 0 {
		max = 10000
	}
	for c.lru.Len() > max {
		c.removeLocked(c.lru.Back())
		c.evictions.Add(1)
	}
}

func (c *Cache) removeLocked(el *list.Element) {
	e := el.Value.(*cacheEntry)
	if e.queued != nil {
		heap.Remove(&c.due, e.queued.index)
		e.queued = nil
	}
	delete(c.entries, e.key)
	c.lru.Remove(el)
}

// queueLocked queues a refresh of e's ticket and starts a worker if fewer
// than MaxRefreshes run. A refresh belongs to no request: it runs on a
// context of its own (FetchTimeout), and keeps nothing of the request whose
// hit queued it, which may be long gone by its turn.
func (c *Cache) queueLocked(e *cacheEntry) {
	e.queued = &refresh{entry: e, deadline: e.ticket.EndTime.Add(-c.skew(e.ticket))}
	heap.Push(&c.due, e.queued)
	max := c.MaxRefreshes
	if max <= 0 {
		max = 8
	}
	if c.workers < max {
		c.workers++
		go c.refreshLoop()
	}
}

// refreshLoop runs queued refreshes, earliest deadline first, until none
// is left.
func (c *Cache) refreshLoop() {
	c.mu.Lock()
	for c.due.Len() > 0 {
		r := heap.Pop(&c.due).(*refresh)
		e := r.entry
		e.queued = nil
		if !c.now().Before(r.deadline) {
			// Too late to refresh ahead: the next request fetches.
			c.refreshesLate.Add(1)
			continue
		}
		if _, busy := c.inflight[e.key]; busy {
			continue
		}
		f := &fetch{done: make(chan struct{})}
		c.inflight[e.key] = f
		c.refreshes.Add(1)
		c.mu.Unlock()
		c.run(context.Background(), e.key, e.name, f, true)
		c.mu.Lock()
	}
	c.workers--
	c.mu.Unlock()
}

// Invalidate drops the ticket (or refusal) for user and spn, e.g. after
// Exchange answered 401 to it.
func (c *Cache) Invalidate(user, spn string) { c.invalidate(key(user, spn)) }

func (c *Cache) invalidate(k cacheKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[k]; ok {
		c.removeLocked(el)
	}
}

// Stats returns the counters.
func (c *Cache) Stats() CacheStats {
	c.mu.Lock()
	n, waiting := c.lru.Len(), c.due.Len()
	c.mu.Unlock()
	return CacheStats{Hits: c.hits.Load(), NegativeHits: c.negativeHits.Load(), Misses: c.misses.Load(),
		Exchanges: c.exchanges.Load(), Errors: c.errs.Load(), Evictions: c.evictions.Load(),
		Refreshes: c.refreshes.Load(), RefreshErrors: c.refreshErrs.Load(), RefreshesLate: c.refreshesLate.Load(),
		RefreshesWaiting: waiting, Mismatches: c.mismatches.Load(), Entries: n}
}

// TicketSource returns a source of tickets from user to spn backed by the cache.
func (c *Cache) TicketSource(user, spn string) TicketSource {
	return cacheSource{c: c, user: user, spn: spn}
}

type cacheSource struct {
	c         *Cache
	user, spn string
}

func (s cacheSource) Ticket(ctx context.Context) (*Ticket, error) {
	return s.c.Ticket(ctx, s.user, s.spn)
}
