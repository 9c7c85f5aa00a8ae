package seg

import (
	"context"
	"errors"
	"strings"
	"sync"
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
// prefix. With Accounts set, every name is resolved by the domain's KDC to the
// account that holds it (Accounts, *kerberos.Client.Account), and that
// account is the one impersonated, with its name spelled as AD keeps it, so
// that "alice", "ALICE" and "CORP\aLiCe" are one user in the ticket cache,
// the upstream pools and the redirects. Without Accounts, bare and
// DOMAIN\user names are taken as typed and UPNs are refused.
//
// The zero value accepts bare names only.
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

// Resolve returns the account that name belongs to: through Accounts when
// set; else a bare or DOMAIN\user name as typed, and a UPN refused (its
// prefix may be another account's name). Errors for names the domain does
// not know, or that cannot be its users', match ErrBadName.
func (n Names) Resolve(ctx context.Context, name string) (*kerberos.Account, error) {
	p, err := n.Principal(name)
	if err != nil {
		return nil, err
	}
	if n.Accounts != nil {
		return n.Accounts.Account(ctx, p)
	}
	if strings.Contains(p, "@") {
		return nil, nameErr("a UPN names an account only through the directory: set Names.Accounts")
	}
	return &kerberos.Account{User: p, Name: p}, nil
}

// Same reports whether two names given by a device or an MDM are written
// for the same user, without asking the directory: DOMAIN\user and a bare
// name compare as account names, UPNs as UPNs, compared as AD compares
// names. A UPN and an account name are never the same here (see Matches).
func (n Names) Same(a, b string) bool {
	pa, err := n.Principal(a)
	if err != nil {
		return false
	}
	pb, err := n.Principal(b)
	if err != nil {
		return false
	}
	return kerberos.EqualNames(pa, pb)
}

// Matches reports whether name, as an MDM or a device writes it, names the
// account: an account name compares with acct.User, a UPN with acct.UPN.
func (n Names) Matches(name string, acct *kerberos.Account) bool {
	if acct == nil {
		return false
	}
	p, err := n.Principal(name)
	if err != nil {
		return false
	}
	if strings.Contains(p, "@") {
		return acct.UPN != "" && kerberos.EqualNames(p, acct.UPN) || kerberos.EqualNames(p, acct.User)
	}
	return kerberos.EqualNames(p, acct.User)
}

// key is the key of name in a set of users written as Matches reads them.
func (n Names) key(name string) string {
	if p, err := n.Principal(name); err == nil {
		name = p
	}
	return kerberos.UpperName(name)
}

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
	if n.NetBIOS != "" && kerberos.EqualNames(dom, n.NetBIOS) {
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
	if n.Realm != "" && kerberos.EqualNames(s, n.Realm) {
		// Lower case: "alice@CORP.EXAMPLE.COM" written in the realm's
		// spelling would be read by the KDC as the account alice, not as
		// the UPN, which AD may have given to another account.
		return strings.ToLower(n.Realm), true
	}
	for _, x := range n.Suffixes {
		if kerberos.EqualNames(s, x) {
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
// NegativeTTL. Concurrent first requests for one name share one exchange.
// Spellings that AD takes for one name (kerberos.EqualNames) share an entry.
// Only Resolver is required.
//
// A UPN moved to another account in AD reaches the gateway within TTL;
// Forget makes it at once. A certificate that carries the UPN then names the
// new holder, as it would at a Windows logon that maps certificates by UPN.
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
	// MaxEntries bounds the remembered names (default 100000).
	MaxEntries int
	// Timeout bounds one exchange with the KDC (default 10s).
	Timeout time.Duration

	mu    sync.Mutex
	names map[string]*accountEntry
}

type accountEntry struct {
	done    chan struct{} // closed when acct or err is set
	acct    *kerberos.Account
	err     error
	expires time.Time
}

// Account returns the account that name (as Names.Principal gives it)
// belongs to. A name the KDC does not know or refuses matches ErrBadName
// and carries the KDC's error; a KDC that does not answer gives its error
// (kerberos.ErrNoKDC), which is not remembered.
func (a *Accounts) Account(ctx context.Context, name string) (*kerberos.Account, error) {
	if a == nil || a.Resolver == nil {
		return nil, errors.New("seg: Accounts without a Resolver")
	}
	k := kerberos.UpperName(name)
	now := time.Now()
	a.mu.Lock()
	if a.names == nil {
		a.names = map[string]*accountEntry{}
	}
	e := a.names[k]
	if e != nil {
		select {
		case <-e.done:
			if !now.Before(e.expires) {
				delete(a.names, k)
				e = nil
			}
		default:
		}
	}
	owner := e == nil
	if owner {
		if len(a.names) >= a.maxEntries() {
			a.evict(now)
		}
		e = &accountEntry{done: make(chan struct{})}
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

func (a *Accounts) fetch(k, name string, e *accountEntry) {
	// Not the request's context: waiters share this exchange.
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout())
	defer cancel()
	acct, err := a.Resolver.Account(ctx, name)
	ttl := a.ttl()
	switch {
	case err == nil && (acct == nil || acct.User == ""):
		err = errors.New("seg: the resolver named no account")
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
	e.acct, e.err, e.expires = acct, err, time.Now().Add(ttl)
	if err != nil {
		e.acct = nil
		if ttl == 0 && a.names[k] == e {
			delete(a.names, k)
		}
	}
	a.mu.Unlock()
	close(e.done)
}

// evict drops expired entries and, if that is not enough, a tenth of the
// rest (map order), so a flood of distinct names costs one sweep per tenth.
func (a *Accounts) evict(now time.Time) {
	for k, e := range a.names {
		select {
		case <-e.done:
			if !now.Before(e.expires) {
				delete(a.names, k)
			}
		default:
		}
	}
	excess := len(a.names) - a.maxEntries()*9/10
	for k, e := range a.names {
		if excess <= 0 {
			break
		}
		select {
		case <-e.done:
			delete(a.names, k)
			excess--
		default:
		}
	}
}

// Len reports how many names are remembered.
func (a *Accounts) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.names)
}

// Forget drops every remembered answer (after a rename in AD).
func (a *Accounts) Forget() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, e := range a.names {
		select {
		case <-e.done:
			delete(a.names, k)
		default:
		}
	}
}

func (a *Accounts) ttl() time.Duration { return positiveOr(a.TTL, 10*time.Hour) }

func (a *Accounts) negativeTTL() time.Duration { return positiveOr(a.NegativeTTL, time.Minute) }

func (a *Accounts) maxEntries() int { return positiveOr(a.MaxEntries, 100000) }

func (a *Accounts) timeout() time.Duration { return positiveOr(a.Timeout, 10*time.Second) }

// positiveOr is v when it is set (positive), else the default: the zero
// value of a field means its default.
func positiveOr[T int | int64 | float64 | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}
