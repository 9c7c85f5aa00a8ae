package seg

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/segkcd/segkcd/kerberos"
)

// Names says which names a device may present (a UPN from its certificate or
// Basic login, DOMAIN\user, or a bare account name) and, through Accounts,
// which account each one belongs to.
//
// A UPN's prefix is not an account name in Active Directory: the account
// jdoe may hold j.doe@corp.example.com, and alice@example.com may be xsmith's
// UPN while another account is called alice. So a UPN is never cut to its
// prefix. Every name is resolved by the domain's KDC to the account that
// holds it (Accounts, *kerberos.Client.Account), and that account's SID,
// read from the PAC the KDC signs, is the user everywhere after: "alice",
// "ALICE", "CORP\aLiCe" and alice's UPN are one user in the ticket cache,
// the upstream pools, the redirects and the policy because the KDC names one
// SID for them, never because the gateway folded them into one string.
// Names never compares two names itself beyond what AD is known to fold
// (ASCII letters, see foldASCII): Go's Unicode tables join letters that AD
// keeps apart (U+10D0 and U+1C90 are two accounts' names on Samba).
//
// Accounts is required to name an account: without it Resolve refuses
// every name.
type Names struct {
	// Realm is the Kerberos realm of the users, e.g. CORP.EXAMPLE.COM. Its
	// lower case is a UPN suffix of the domain.
	Realm string
	// Suffixes are further UPN suffixes of the domain (alternative UPN
	// suffixes, e.g. example.com).
	Suffixes []string
	// NetBIOS is the domain's NetBIOS name, for DOMAIN\user.
	NetBIOS string
	// OtherSuffixes lets UPNs with suffixes not listed through to the KDC as
	// enterprise names. Off by default: a certificate for someone@elsewhere
	// is refused. Users of a domain that trusts the gateway's
	// (bob@other.example.com) need it: when the krb5 configuration lists that
	// domain's realm, the kerberos.Client impersonates them across the trust.
	OtherSuffixes bool
	// Accounts resolves names to accounts. Share one between the
	// authenticators and the ProxyHandler (it remembers answers).
	Accounts *Accounts
}

// namesKey carries a ProxyHandler's Names in the context of the requests
// it hands its authenticators.
type namesKey struct{}

// namesFor is n, or, when n is the zero value, the Names of the
// ProxyHandler whose request ctx belongs to: the handler keeps the one
// Names, and its authenticators need not be given it again.
func namesFor(ctx context.Context, n *Names) *Names {
	if n.Realm != "" || len(n.Suffixes) > 0 || n.NetBIOS != "" || n.OtherSuffixes || n.Accounts != nil {
		return n
	}
	if hn, ok := ctx.Value(namesKey{}).(*Names); ok {
		return hn
	}
	return n
}

// ErrBadName is matched by the error for a name that cannot be a user of
// this domain.
var ErrBadName = errors.New("seg: not a user name of this domain")

// Principal returns the name to ask the KDC about for name, without asking:
// the account name of DOMAIN\user and of a bare name, and a UPN whole, with
// the domain's suffix as configured (the realm's in lower case), for the KDC
// to resolve as an enterprise name.
func (n Names) Principal(name string) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	if i := strings.IndexByte(name, '\\'); i >= 0 {
		dom, user := name[:i], name[i+1:]
		if !n.isDomain(dom) {
			return "", nameErr("domain " + printable(dom) + " is not this domain's")
		}
		return n.bare(user)
	}
	if i := strings.LastIndexByte(name, '@'); i >= 0 {
		user, suffix := name[:i], name[i+1:]
		if user == "" || strings.ContainsAny(user, "@\\") {
			return "", nameErr("empty or compound UPN prefix")
		}
		if s, ok := n.suffix(suffix); ok {
			return user + "@" + s, nil
		}
		if n.OtherSuffixes && suffix != "" {
			return name, nil
		}
		return "", nameErr("UPN suffix " + printable(suffix) + " is not this domain's")
	}
	return n.bare(name)
}

// Resolve returns the account that name belongs to, as the KDC says
// (Accounts). Errors for names the domain does not know, or that cannot be
// its users', match ErrBadName; without Accounts every name is refused
// (ErrNoDirectory).
func (n Names) Resolve(ctx context.Context, name string) (*kerberos.Account, error) {
	p, err := n.Principal(name)
	if err != nil {
		return nil, err
	}
	if n.Accounts == nil {
		return nil, ErrNoDirectory
	}
	return n.Accounts.Account(ctx, p)
}

// resolveUnproven is Resolve for a name nothing vouches for yet (a Basic
// login name before its password is checked): a name not remembered is
// asked of the KDC only within Accounts.MaxUnproven, and not at all for a
// request whose source has spent its failed logins (sourceSpent).
func (n Names) resolveUnproven(ctx context.Context, name string) (*kerberos.Account, error) {
	p, err := n.Principal(name)
	if err != nil {
		return nil, err
	}
	if n.Accounts == nil {
		return nil, ErrNoDirectory
	}
	acct, err := n.Accounts.lookup(ctx, p, 0, true)
	if errors.Is(err, ErrNamesBusy) && unprovenLimit(ctx, 2) == 2 && n.Accounts.waitUnproven(ctx, time.Second, unprovenLimit(ctx, positiveOr(n.Accounts.MaxUnproven, 2))) {
		// A source without failed logins waits a moment for its turn
		// (those with failures are turned away at once): a real user's
		// first login during a flood goes through late rather than not.
		acct, err = n.Accounts.lookup(ctx, p, 0, true)
	}
	return acct, err
}

// Refresh is Resolve asking the KDC again (Accounts.Refresh): for a name
// whose remembered account has been contradicted.
func (n Names) Refresh(ctx context.Context, name string) (*kerberos.Account, error) {
	return n.Fresh(ctx, name, 0)
}

// Fresh is Resolve with an answer at most maxAge old (Accounts.Fresh); 0
// means as fresh as Accounts.MinRefresh allows.
func (n Names) Fresh(ctx context.Context, name string, maxAge time.Duration) (*kerberos.Account, error) {
	p, err := n.Principal(name)
	if err != nil {
		return nil, err
	}
	if n.Accounts == nil {
		return nil, ErrNoDirectory
	}
	return n.Accounts.Fresh(ctx, p, maxAge)
}

// ErrNoDirectory is the error of Names.Resolve without Accounts: a name
// becomes a user only through the directory.
var ErrNoDirectory = errors.New("seg: Names has no Accounts to resolve names with")

// foldASCII upper-cases the ASCII letters of s and nothing else. It is the
// only folding the gateway does to a name, and only where a name is a key
// (Accounts) or compared with a configured one (a realm, a UPN suffix, a
// NetBIOS name). Every version of Windows' upcase table (which AD uses for
// sAMAccountName and userPrincipalName, whose syntax is case-insensitive)
// and Samba's casefold map a-z to A-Z, so two spellings that differ only
// there are one name to AD. Beyond ASCII the tables differ between Windows
// versions, Samba and Go's Unicode version (Go upper-cases U+10D0 to U+1C90,
// Unicode 11; AD keeps geoაx and geoᲐx as two accounts), so nothing else is
// folded: a second spelling of one account costs one more question to the
// KDC, which names the same SID, and never makes two accounts one.
func foldASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'a' <= s[i] && s[i] <= 'z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'a' <= b[j] && b[j] <= 'z' {
					b[j] -= 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// equalASCII compares two configured or presented names as foldASCII does.
func equalASCII(a, b string) bool { return len(a) == len(b) && foldASCII(a) == foldASCII(b) }

// foldDeviceID is the key of an EAS device id (policy, debug list, the
// Ping a device holds): ids are ASCII letters and digits in practice
// (MS-ASHTTP), compared without case as Exchange does, and a non-ASCII id
// is compared as written rather than through Go's Unicode tables.
func foldDeviceID(id string) string { return foldASCII(id) }

func (n Names) bare(user string) (string, error) {
	if user == "" || strings.ContainsAny(user, "@\\") {
		return "", nameErr("empty or compound account name")
	}
	return user, nil
}

func (n Names) isDomain(dom string) bool {
	if dom == "" {
		return false
	}
	if n.NetBIOS != "" && equalASCII(dom, n.NetBIOS) {
		return true
	}
	_, ok := n.suffix(dom)
	return ok
}

// suffix returns the domain's spelling of UPN suffix s.
func (n Names) suffix(s string) (string, bool) {
	if s == "" {
		return "", false
	}
	if n.Realm != "" && equalASCII(s, n.Realm) {
		// Lower case: "alice@CORP.EXAMPLE.COM" written in the realm's
		// spelling would be read by the KDC as the account alice, not as
		// the UPN, which AD may have given to another account.
		return strings.ToLower(n.Realm), true
	}
	for _, x := range n.Suffixes {
		if equalASCII(s, x) {
			return x, true
		}
	}
	return "", false
}

// checkName refuses what cannot be an AD name and what would change the
// principal's shape: control characters, '/', invalid UTF-8, over-long.
func checkName(s string) error {
	if s == "" || len(s) > maxUserLen || !utf8.ValidString(s) {
		return nameErr("empty, over-long or invalid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) || r == '/' {
			return nameErr("holds a control character or '/'")
		}
	}
	return nil
}

func nameErr(why string) error { return &nameError{why: why} }

type nameError struct {
	why string
	err error // the KDC's answer, when it refused the name
}

// Error says why without the KDC's error, which names what was typed.
func (e *nameError) Error() string        { return "seg: user name: " + e.why }
func (e *nameError) Is(target error) bool { return target == ErrBadName }
func (e *nameError) Unwrap() error        { return e.err }

// AccountResolver finds the account a name belongs to. *kerberos.Client is
// one: it asks the KDC (S4U2Self) and reads the ticket's PAC.
type AccountResolver interface {
	Account(ctx context.Context, name string) (*kerberos.Account, error)
}

// Accounts resolves names to accounts and remembers the answers: an
// account for TTL, a name the KDC refused (unknown, disabled) for
// NegativeTTL, each in a memory of its own (MaxEntries, MaxRefused), so that
// a flood of names no account holds never pushes out a real user's answer.
// Concurrent first requests for one name share one exchange.
// Each name is remembered as it was asked, with its ASCII letters folded and
// nothing more (foldASCII): two names that AD may keep as two accounts never
// share an entry. Two names of one account have an entry each and the same
// SID, which is what every piece of per-user state is keyed by.
// Only Resolver is required.
//
// A UPN moved to another account in AD reaches the gateway within TTL, at
// once where the gateway learns of it first: Refresh asks again (the gateway
// calls it when a certificate's SID or the KDC's ticket names another account
// than the one remembered), and Forget drops everything. From the new answer
// on, every request that presents the name is the new holder's.
type Accounts struct {
	// Resolver asks the directory (a *kerberos.Client: one S4U2Self per
	// name and TTL).
	Resolver AccountResolver
	// TTL is how long an account is remembered (default 10h, AD's ticket
	// lifetime: naming the account costs one S4U2Self per user and TTL
	// beside the ticket's two exchanges).
	TTL time.Duration
	// NegativeTTL is how long a refused name is remembered (default 1m).
	NegativeTTL time.Duration
	// MaxEntries bounds the remembered accounts (default 100000). Only the
	// KDC's positive answers count, so only real accounts' names fill it.
	MaxEntries int
	// MaxRefused bounds the remembered refusals (default 10000), kept apart
	// from the accounts: past it, older refusals are dropped, never an
	// account.
	MaxRefused int
	// MaxUnproven bounds, gateway-wide, the names asked of the KDC at once
	// that nothing vouches for yet: a Basic login name before its password
	// is checked, which anyone can send (default 2). A name that is not
	// remembered and comes past the bound is refused at once, without a
	// question to the KDC (ErrNamesBusy; the device gets 503 with
	// Retry-After). A request from a source that has failed logins before
	// (ProxyHandler.FailedLoginBurst) may find only half the bound in
	// flight: a flood's sources soon have, and leave the other half to
	// real users signing in for the first time. Names from certificates,
	// the policy and the admin API are not bounded by it: with the default,
	// a flood of random Basic names holds at most two of a KDC's
	// kerberos.Transport.MaxInFlight slots, and known users and
	// certificate users keep the rest.
	MaxUnproven int
	// Timeout bounds one exchange with the KDC (default 10s).
	Timeout time.Duration
	// MinRefresh is how often Refresh may ask the KDC again about one name,
	// whoever presents it (default 5s): a device whose certificate keeps
	// contradicting the directory costs one exchange per MinRefresh.
	MinRefresh time.Duration

	mu       sync.Mutex
	names    map[string]*accountEntry // accounts, and questions in flight
	refused  map[string]*accountEntry // refusals, until NegativeTTL
	unproven int                      // questions in flight for unproven names
	freed    chan struct{}            // closed when one of them ends (waitUnproven)
	// changes counts answers that named another SID than the one
	// remembered for the name before, and Forget calls: whoever compiled
	// names into SIDs (Policy) compiles again when it moves.
	changes atomic.Uint64
}

// negativeAnswer stands for a refusal in accountEntry.prevSID.
const negativeAnswer = "-"

type accountEntry struct {
	done     chan struct{} // closed when acct or err is set
	acct     *kerberos.Account
	err      error
	expires  time.Time
	asked    time.Time // when the exchange began
	used     time.Time // when a request last found it (eviction drops the least used first)
	prevSID  string    // the SID an earlier answer named, negativeAnswer, or "" (none known)
	unproven bool      // asked for an unproven name: counted in Accounts.unproven
	// replaced is the answer, still valid, that this one was asked to
	// replace: put back when the KDC cannot be asked, so that a failed
	// re-ask fails only the caller that wanted a fresh answer.
	replaced *accountEntry
}

// Account returns the account that name (as Names.Principal gives it)
// belongs to. A name the KDC does not know or refuses matches ErrBadName
// and carries the KDC's error; a KDC that does not answer gives its error
// (kerberos.ErrNoKDC), which is not remembered.
func (a *Accounts) Account(ctx context.Context, name string) (*kerberos.Account, error) {
	return a.lookup(ctx, name, 0, false)
}

// ErrNamesBusy is the error for a name nothing vouches for yet (a Basic
// login name) that is not remembered, when Accounts.MaxUnproven such names
// are being asked of the KDC already: it is refused without asking, and the
// device is told to try again (503, Retry-After).
var ErrNamesBusy = errors.New("seg: too many unknown login names are being resolved at once; try again shortly")

// Refresh asks the KDC about name again, whatever is remembered (at most once
// per name every MinRefresh), and returns the new answer: the gateway calls it
// when what it remembers is contradicted (a certificate carries another
// SID, a ticket for the name names another account).
func (a *Accounts) Refresh(ctx context.Context, name string) (*kerberos.Account, error) {
	return a.Fresh(ctx, name, 0)
}

// Fresh is Account with an answer asked of the KDC at most maxAge ago (but
// never more often than MinRefresh allows; 0 means MinRefresh): where a
// stale answer would matter, as for a certificate that carries nothing but
// a name (weak mapping), or the name a Basic password was just checked for.
func (a *Accounts) Fresh(ctx context.Context, name string, maxAge time.Duration) (*kerberos.Account, error) {
	return a.lookup(ctx, name, max(maxAge, positiveOr(a.MinRefresh, 5*time.Second)), false)
}

// Changes counts the answers that moved a name to another SID, and the
// calls of Forget: a caller that turned names into SIDs (Policy) turns them
// again when it grows.
func (a *Accounts) Changes() uint64 {
	if a == nil {
		return 0
	}
	return a.changes.Load()
}

// lookup returns the remembered answer for name, or asks the KDC: when
// there is none, it has expired, or maxAge (when set) has passed since it
// was asked. An unproven name is asked within MaxUnproven only, and not for
// a request whose source has spent its failed logins.
func (a *Accounts) lookup(ctx context.Context, name string, maxAge time.Duration, unproven bool) (*kerberos.Account, error) {
	if a == nil || a.Resolver == nil {
		return nil, errors.New("seg: Accounts without a Resolver")
	}
	k := foldASCII(name)
	now := time.Now()
	a.mu.Lock()
	if a.names == nil {
		a.names = map[string]*accountEntry{}
		a.refused = map[string]*accountEntry{}
	}
	mem := a.names
	e := mem[k]
	if e == nil {
		mem = a.refused
		e = mem[k]
	}
	prev := ""
	var replaced *accountEntry // a good answer asked about again
	if e != nil {
		select {
		case <-e.done:
			if !now.Before(e.expires) || maxAge > 0 && now.Sub(e.asked) >= maxAge {
				prev = negativeAnswer
				if e.acct != nil {
					prev = e.acct.SID
				}
				if now.Before(e.expires) {
					replaced = e
				}
				delete(mem, k)
				e = nil
			}
		default:
		}
	}
	if e != nil {
		e.used = now
	}
	owner := e == nil
	if owner {
		if unproven {
			switch {
			case sourceSpent(ctx):
				a.restore(k, replaced)
				a.mu.Unlock()
				return nil, ErrSourceLimited
			case a.unproven >= unprovenLimit(ctx, positiveOr(a.MaxUnproven, 2)):
				a.restore(k, replaced)
				a.mu.Unlock()
				return nil, ErrNamesBusy
			}
			a.unproven++
		}
		if len(a.names) >= a.maxEntries() {
			a.evict(a.names, a.maxEntries(), now)
		}
		e = &accountEntry{done: make(chan struct{}), asked: now, used: now, prevSID: prev, replaced: replaced, unproven: unproven}
		a.names[k] = e
	}
	a.mu.Unlock()
	if owner {
		// Apart from this request: it may give up waiting (its context),
		// the question goes on for the others.
		go a.fetch(k, name, e)
	}
	select {
	case <-e.done:
		return e.acct, e.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// waitUnproven waits at most d for a question about an unproven name to
// end, and reports whether one did (or fewer than limit are in flight
// already: one ended between the refusal and the wait).
func (a *Accounts) waitUnproven(ctx context.Context, d time.Duration, limit int) bool {
	a.mu.Lock()
	if a.unproven < limit {
		a.mu.Unlock()
		return true
	}
	if a.freed == nil {
		a.freed = make(chan struct{})
	}
	freed := a.freed
	a.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-freed:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// restore puts back an answer that was to be asked about again, when the
// question is not asked after all. a.mu is held.
func (a *Accounts) restore(k string, e *accountEntry) {
	switch {
	case e == nil:
	case e.acct != nil:
		a.names[k] = e
	default:
		a.refused[k] = e
	}
}

func (a *Accounts) fetch(k, name string, e *accountEntry) {
	// Not the request's context: waiters share this exchange.
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout())
	defer cancel()
	acct, err := a.Resolver.Account(ctx, name)
	ttl := a.ttl()
	switch {
	case err == nil && (acct == nil || acct.User == "" || acct.SID == ""):
		err = errors.New("seg: the resolver named no account, or one without a SID")
		ttl = 0
	case err == nil:
	case errors.Is(err, kerberos.ErrClientUnknown):
		err = &nameError{why: "no account of the domain holds it", err: err}
		ttl = a.negativeTTL()
	case errors.Is(err, kerberos.ErrPolicy):
		err = &nameError{why: "the domain refuses its account (disabled, locked or expired)", err: err}
		ttl = a.negativeTTL()
	default:
		ttl = 0 // the way to the KDC failed: ask again next time
	}
	a.mu.Lock()
	if e.unproven {
		a.unproven--
		if a.freed != nil {
			close(a.freed)
			a.freed = nil
		}
	}
	e.acct, e.err, e.expires = acct, err, time.Now().Add(ttl)
	if err != nil {
		e.acct = nil
		if a.names[k] == e {
			delete(a.names, k)
			if ttl > 0 {
				// A refusal: remembered apart from the accounts.
				if len(a.refused) >= a.maxRefused() {
					a.evict(a.refused, a.maxRefused(), time.Now())
				}
				a.refused[k] = e
			} else if r := e.replaced; r != nil && time.Now().Before(r.expires) {
				a.restore(k, r)
			}
		}
	}
	e.replaced = nil
	// A name that names another account than before, or none where it
	// named one, or one where it named none (an account enabled again):
	// whoever turned names into SIDs turns them again.
	switch {
	case e.prevSID == "":
	case e.acct != nil && e.acct.SID != e.prevSID,
		e.acct == nil && ttl > 0 && e.prevSID != negativeAnswer:
		a.changes.Add(1)
	}
	a.mu.Unlock()
	close(e.done)
}

// evict drops the expired entries of mem and, if that is not enough, down
// to nine tenths of bound: those no request has found for the longest
// first (a device's own name is found at each of its requests; a flood's
// names, or the odd spellings of real ones, once), so a flood costs one
// sweep per tenth and a real user's answer goes last. mem is a.names or
// a.refused: a flood of refused names only ever pushes out refusals.
func (a *Accounts) evict(mem map[string]*accountEntry, bound int, now time.Time) {
	var done []*accountEntry
	for k, e := range mem {
		select {
		case <-e.done:
			if !now.Before(e.expires) {
				delete(mem, k)
			} else {
				done = append(done, e)
			}
		default:
		}
	}
	excess := min(len(mem)-bound*9/10, len(done))
	if excess <= 0 {
		return
	}
	// The cut-off is the excess-th least recent use.
	slices.SortFunc(done, func(x, y *accountEntry) int { return x.used.Compare(y.used) })
	cut := done[excess-1].used
	for k, e := range mem {
		if excess <= 0 {
			break
		}
		select {
		case <-e.done:
			if !e.used.After(cut) {
				delete(mem, k)
				excess--
			}
		default:
		}
	}
}

// size reports how many names are remembered, accounts and refusals.
func (a *Accounts) size() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.names) + len(a.refused)
}

// Forget drops every remembered answer (after a rename in AD).
func (a *Accounts) Forget() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.changes.Add(1)
	for k, e := range a.names {
		select {
		case <-e.done:
			delete(a.names, k)
		default:
		}
	}
	clear(a.refused)
}

func (a *Accounts) ttl() time.Duration { return positiveOr(a.TTL, 10*time.Hour) }

func (a *Accounts) negativeTTL() time.Duration { return positiveOr(a.NegativeTTL, time.Minute) }

func (a *Accounts) maxEntries() int { return positiveOr(a.MaxEntries, 100000) }

func (a *Accounts) maxRefused() int { return positiveOr(a.MaxRefused, 10000) }

func (a *Accounts) timeout() time.Duration { return positiveOr(a.Timeout, 10*time.Second) }

// positiveOr is v when it is set (positive), else the default: the zero
// value of a field means its default.
func positiveOr[T int | int64 | float64 | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}
