package seg

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/jcmturner/gokrb5/v8/config"

	"github.com/segkcd/segkcd/internal/redact"
	"github.com/segkcd/segkcd/kerberos"
)

// BasicAuth authenticates devices that send a user name and password
// (HTTP Basic). The login name is resolved to its account first
// (Names.Accounts: "ALICE", "CORP\alice" and alice's UPN are all the account
// alice); the password is then checked with a Kerberos AS exchange for that
// account against the domain's KDC, not with an LDAP bind.
//
// Every answer is remembered for TTL under an HMAC of (the account's SID,
// its name, password)
// with a key drawn at random for each BasicAuth, never the password itself:
// a correct password so that a phone's requests do not each cost an AS
// exchange, and a wrong one so that a phone stuck on an old password costs
// AD one failed logon per TTL, not one per request. AD counts every failure
// against its lockout threshold; a gateway that passed each retry on would
// lock its users out. Concurrent checks of the same credentials share one
// exchange.
//
// A password the KDC has not answered for yet always goes to the KDC, at a
// bounded rate per account (PasswordBurst at once, then PasswordRate per
// second); past it the gateway answers 401 without asking, until the rate
// allows again. Someone who knows a user's name can therefore keep the user
// out no more than AD's own lockout lets them, which they could reach
// without the gateway, and a flood of guesses for one account cannot flood
// the KDC. A password seen right within TTL is accepted without asking.
type BasicAuth struct {
	// Realm is the users' Kerberos realm.
	Realm string
	// Config lists the realm's KDCs (kerberos.LoadConfig, NewConfig).
	Config *config.Config
	// Transport sends the AS exchanges; nil means one of its own over
	// Config. Share the service account's to share its KDC ordering.
	Transport *kerberos.Transport
	// Names maps the login name to the account (UPN, DOMAIN\user, bare).
	// The zero value means the Names of the ProxyHandler it authenticates
	// for.
	Names Names
	// Service, when set, is the gateway's service account (the
	// kerberos.Client of Names.Accounts): a new password's TGT then gets a
	// ticket to it, and the PAC of that ticket, opened with its key, must
	// name the account the login name was resolved to. The password and
	// the SID are then proved by one chain of the KDC's answers. Without
	// it the name is asked about again after the password (two answers,
	// which may come from two DCs while a rename replicates).
	Service *kerberos.Client
	// TTL is how long an answer, right or wrong, is remembered (default 5m).
	TTL time.Duration
	// MaxEntries bounds the remembered answers and the per-account rates
	// (default 100000).
	MaxEntries int
	// Timeout bounds one AS exchange (default 10s).
	Timeout time.Duration
	// PasswordRate is how many new passwords per second one account may
	// have checked by the KDC once its burst is spent (default 1).
	PasswordRate float64
	// PasswordBurst is how many new passwords one account may have checked
	// at once (default 3).
	PasswordBurst int
	// MaxPasswordChecks bounds the new passwords being checked with the KDC
	// at once, for all accounts together (default 2). A new password past it
	// is refused without asking (ErrPasswordsBusy: 503 with Retry-After):
	// someone who knows many users' names cannot take more than this many of
	// a KDC's kerberos.Transport.MaxInFlight slots from the tickets of users
	// already signed in. A source with failed logins before may find only
	// half of them in flight (see Accounts.MaxUnproven).
	MaxPasswordChecks int

	once    sync.Once
	key     []byte
	tr      *kerberos.Transport
	mu      sync.Mutex
	verdict map[[32]byte]*basicEntry // right answers, and questions in flight
	wrong   map[[32]byte]*basicEntry // wrong answers, apart
	proven  map[[32]byte]time.Time   // right passwords, until provenFor after
	// spentGuesses is each account's allowance of passwords from sources
	// that have spent their failed logins (spentSourceMay).
	spentGuesses map[string]*tokenBucket
	rates        map[string]*tokenBucket // the account's SID -> its allowance
	checks       int                     // new passwords being checked
}

// tokenBucket is a token bucket: an account's new passwords, its guesses
// from spent sources, a source's failed logins.
type tokenBucket struct {
	tokens float64
	last   time.Time
}

// level is t's tokens at now, refilled at perSecond up to burst, without
// changing t.
func (t *tokenBucket) level(now time.Time, burst, perSecond float64) float64 {
	return min(burst, t.tokens+now.Sub(t.last).Seconds()*perSecond)
}

// refill brings t's tokens up to now and returns them.
func (t *tokenBucket) refill(now time.Time, burst, perSecond float64) float64 {
	t.tokens, t.last = t.level(now, burst, perSecond), now
	return t.tokens
}

// ErrTooManyPasswords is matched (with ErrBadCredentials) when a new
// password for an account is refused without asking the KDC: more new
// passwords came for it than PasswordBurst and PasswordRate allow.
var ErrTooManyPasswords = errors.New("seg: too many new passwords for this user at once; try again shortly")

// ErrPasswordsBusy is the error for a new password when
// BasicAuth.MaxPasswordChecks are being checked already: it is not asked
// about, and the device is told to try again (503, Retry-After).
var ErrPasswordsBusy = errors.New("seg: too many new passwords are being checked at once; try again shortly")

type basicEntry struct {
	done    chan struct{} // closed when err is set
	err     error         // nil: password right
	expires time.Time
}

// loginError is a refused login with who tried: an account the directory
// resolved a Basic name to, or a certificate's name. Either may be logged
// (neither is a secret), where a Basic name that is no account may be a
// password typed in the wrong field.
type loginError struct {
	who string
	err error
}

func (e *loginError) Error() string { return e.err.Error() }
func (e *loginError) Unwrap() error { return e.err }

// opaqueError says msg and unwraps to err, whose text may hold a secret.
type opaqueError struct {
	msg string
	err error
}

func (e *opaqueError) Error() string { return e.msg }
func (e *opaqueError) Unwrap() error { return e.err }

// loginNameError is the error for a Basic login name that names no account,
// or could not be resolved, without the name.
func loginNameError(err error) error {
	switch {
	case errors.Is(err, ErrBadName):
		return &opaqueError{msg: ErrBadCredentials.Error() + ": the login name names no account of the domain",
			err: errorf("%w: %w", ErrBadCredentials, err)}
	case errors.Is(err, ErrNamesBusy), errors.Is(err, ErrSourceLimited):
		return err
	case errors.Is(err, kerberos.ErrNoKDC):
		return &opaqueError{msg: "seg: resolving the login name: " + kerberos.ErrNoKDC.Error(), err: err}
	case isTimeout(err):
		return &opaqueError{msg: "seg: resolving the login name: no answer in time", err: err}
	}
	return &opaqueError{msg: "seg: resolving the login name failed", err: err}
}

// Authenticate implements ProxyHandler.Authenticate.
func (b *BasicAuth) Authenticate(r *http.Request) (*Identity, error) {
	name, password, ok := r.BasicAuth()
	if !ok {
		return nil, ErrNoCredentials
	}
	names := namesFor(r.Context(), &b.Names)
	acct, err := names.resolveUnproven(r.Context(), name)
	if err != nil {
		// The name may be a password typed in the wrong field: the error
		// keeps its causes for errors.Is but says none of what was typed.
		return nil, loginNameError(err)
	}
	if password == "" {
		return nil, &loginError{acct.User, errorf("%w: empty password", ErrBadCredentials)}
	}
	if fresh, err := b.check(r.Context(), acct, password); err != nil {
		// What follows asks the KDC about the name again: only for an
		// answer the KDC has just given, never for one remembered (a
		// remembered wrong password repeated would otherwise cost the KDC
		// a question per MinRefresh per spelling, past every bound).
		switch {
		case !fresh:
		case errors.Is(err, kerberos.ErrAccountChanged):
			// A right password, for an account the login name was not
			// remembered for: the name has passed to another since (a
			// rename). Asked about again now, so that the next try is
			// the name's holder's (a right password is rare enough, and
			// bounded per account).
			if p, perr := names.Principal(name); perr == nil && names.Accounts != nil {
				names.Accounts.lookup(r.Context(), p, time.Nanosecond, false)
			}
		case errors.Is(err, kerberos.ErrPreauthFailed):
			// A wrong password: the name may be remembered for an
			// account it has left (a UPN moved); asked about again at
			// most every Accounts.MinRefresh, so that a stale name does
			// not keep failing logons of its old holder.
			names.Refresh(r.Context(), name)
		}
		return nil, &loginError{acct.User, err}
	}
	return identity(acct, name, "basic"), nil
}

// Check verifies the password of acct (as Names.Resolve names it: the AS
// exchange is for acct.User, and the answer and the account's allowance of
// new passwords are keyed by acct.SID), from memory when it was checked
// within TTL. A wrong password is an error
// matching ErrBadCredentials (and kerberos.ErrPreauthFailed); an account
// the KDC refuses (disabled, locked, expired) matches ErrBadCredentials and
// kerberos.ErrPolicy; a new password past the account's rate matches
// ErrBadCredentials and ErrTooManyPasswords; a KDC that does not answer
// gives the kerberos error (ErrNoKDC), which is not remembered.
func (b *BasicAuth) Check(ctx context.Context, acct *kerberos.Account, password string) error {
	_, err := b.check(ctx, acct, password)
	return err
}

// check is Check that also says whether this call asked the KDC (and so
// holds a new answer), rather than finding one remembered or shared.
func (b *BasicAuth) check(ctx context.Context, acct *kerberos.Account, password string) (fresh bool, err error) {
	b.once.Do(b.init)
	if acct == nil || acct.SID == "" || acct.User == "" {
		return false, errors.New("seg: BasicAuth.Check needs an account with a name and a SID")
	}
	// The answer is about the password of the principal the AS exchange
	// names (acct.User), and is kept for that account (acct.SID): both are
	// in the key, so that the verdict of a name that has passed to another
	// account since (a rename) never vouches for the account it left.
	k := b.keyFor(acct.SID+"\x00"+acct.User, password)
	now := time.Now()
	b.mu.Lock()
	mem := b.verdict
	e := mem[k]
	if e == nil {
		mem = b.wrong
		e = mem[k]
	}
	if e != nil {
		select {
		case <-e.done:
			if now.After(e.expires) {
				delete(mem, k)
				e = nil
			}
		default:
		}
	}
	// A password this account has signed in with before (within
	// provenFor) is not a guess: it is checked even from a source that has
	// spent its failed logins (a phone behind the same NAT as a client that
	// keeps failing), and within the whole bound.
	proven := now.Before(b.proven[k])
	if sourceSpent(ctx) && !b.spentSourceMay(acct.SID, proven || isRight(e), now) {
		b.mu.Unlock()
		return false, ErrSourceLimited
	}
	owner := e == nil
	if owner {
		limit := positiveOr(b.MaxPasswordChecks, 2)
		if !proven {
			limit = unprovenLimit(ctx, limit)
		}
		switch {
		case b.checks >= limit:
			b.mu.Unlock()
			return false, ErrPasswordsBusy
		}
		if len(b.verdict) >= b.maxEntries() || len(b.rates) >= b.maxEntries() || len(b.spentGuesses) >= b.maxEntries() {
			b.evict(now)
		}
		if !b.allow(acct.SID, now) {
			b.mu.Unlock()
			return false, errorf("%w: %w", ErrBadCredentials, ErrTooManyPasswords)
		}
		b.checks++
		e = &basicEntry{done: make(chan struct{})}
		b.verdict[k] = e
	}
	b.mu.Unlock()

	if owner {
		// Apart from this request, which may stop waiting (its context)
		// while the exchange goes on for the others.
		go b.settle(k, e, acct, password)
	}
	select {
	case <-e.done:
		return owner, e.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// settle asks the KDC about a password and records the answer.
func (b *BasicAuth) settle(k [32]byte, e *basicEntry, acct *kerberos.Account, password string) {
	err := b.exchange(acct, password)
	now := time.Now()
	b.mu.Lock()
	b.checks--
	e.err = err
	e.expires = now.Add(b.ttl())
	switch {
	case err == nil:
		if len(b.proven) >= b.maxEntries() {
			for pk, until := range b.proven {
				if now.After(until) || len(b.proven) > b.maxEntries()*9/10 {
					delete(b.proven, pk)
				}
			}
		}
		b.proven[k] = now.Add(provenFor)
	case b.verdict[k] != e:
	case !remembered(err):
		delete(b.verdict, k)
	default:
		delete(b.proven, k) // a password changed since: no longer proven
		// A wrong password: remembered apart from the right ones, so
		// that guesses push out guesses, never a user's right password.
		delete(b.verdict, k)
		if len(b.wrong) >= b.maxEntries() {
			evictVerdicts(b.wrong, b.maxEntries(), now)
		}
		b.wrong[k] = e
	}
	b.mu.Unlock()
	close(e.done)
}

// provenFor is how long a right password counts as proven (BasicAuth.check):
// a phone signs in at least daily.
const provenFor = 24 * time.Hour

// sameAccount checks, after the KDC took a password for acct.User, that the
// password is acct.SID's: the AS exchange proves a password for a name, and
// the SID the request will carry was remembered for that name earlier. A
// name that has passed to another account since (a rename) would otherwise
// let the new holder's password in as the old holder. With Service the
// proof is the PAC of a ticket from the password's TGT; without, the name
// is asked about again.
func (b *BasicAuth) sameAccount(ctx context.Context, user *kerberos.Client, acct *kerberos.Account) error {
	var now *kerberos.Account
	var err error
	if b.Service != nil && equalASCII(acct.Realm, b.Service.Realm()) {
		// The password's TGT, then a ticket to the gateway's own account:
		// its PAC is the TGT's, whose KDC took the password.
		var t *kerberos.Ticket
		if t, err = user.ServiceTicket(ctx, b.Service.Principal().PrincipalNameString()); err == nil {
			now, err = b.Service.AccountIn(t)
		}
	} else if names := namesFor(ctx, &b.Names); names.Accounts == nil {
		return ErrNoDirectory
	} else {
		// Asked now, not MinRefresh ago: new passwords are already bounded
		// per account (PasswordBurst, PasswordRate), and each costs an AS
		// exchange.
		now, err = names.Accounts.lookup(ctx, acct.User, time.Nanosecond, false)
	}
	switch {
	case err != nil:
		return err // not remembered: the next try asks again
	case now.SID != acct.SID:
		return &opaqueError{msg: "seg: the login name's account changed since it was resolved; try again",
			err: errorf("%w: %s is now %s, not %s", kerberos.ErrAccountChanged, acct.User, now.SID, acct.SID)}
	}
	return nil
}

// isRight reports whether e is a remembered right answer.
func isRight(e *basicEntry) bool {
	if e == nil {
		return false
	}
	select {
	case <-e.done:
		return e.err == nil
	default:
		return false
	}
}

// Guesses from spent sources, per account: spentGuessBurst, then one per
// spentGuessEvery.
const (
	spentGuessBurst = 3
	spentGuessEvery = 10 * time.Minute
)

// spentSourceMay decides on a password from a source that has spent its
// failed logins. Anything but a password known right is refused, and the
// refusal is charged to the account: every refusal reads the same (503),
// and without the charge a right password, which would pass, could be
// found by guessing, with nothing reaching AD's lockout count. Once the
// account's allowance of such guesses is spent, even a right password is
// refused from spent sources (not from others) until it refills. b.mu is
// held.
func (b *BasicAuth) spentSourceMay(sid string, right bool, now time.Time) bool {
	g := b.spentGuesses[sid]
	if g == nil {
		if len(b.spentGuesses) >= b.maxEntries() {
			b.evict(now)
		}
		g = &tokenBucket{tokens: spentGuessBurst, last: now}
		b.spentGuesses[sid] = g
	}
	g.refill(now, spentGuessBurst, 1/spentGuessEvery.Seconds())
	if !right {
		g.tokens = max(0, g.tokens-1)
		return false
	}
	return g.tokens >= 1
}

// allow takes one new password from the account's allowance. b.mu is held.
func (b *BasicAuth) allow(key string, now time.Time) bool {
	burst := float64(b.passwordBurst())
	r := b.rates[key]
	if r == nil {
		r = &tokenBucket{tokens: burst, last: now}
		b.rates[key] = r
	}
	if r.refill(now, burst, b.passwordRate()) < 1 {
		return false
	}
	r.tokens--
	return true
}

// remembered tells the answers about the credentials from failures of the
// way to the KDC.
func remembered(err error) bool { return errors.Is(err, ErrBadCredentials) }

func (b *BasicAuth) exchange(acct *kerberos.Account, password string) error {
	// Not the request's context: waiters share this exchange, and one
	// device hanging up must not fail the others.
	if b.Config == nil {
		return errors.New("seg: BasicAuth has no Config (the realm's KDCs)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout())
	defer cancel()
	c := kerberos.NewWithPassword(acct.User, b.Realm, password, b.Config)
	c.Transport = b.tr
	_, err := c.TGT(ctx)
	switch {
	case err == nil:
		return b.sameAccount(ctx, c, acct)
	case errors.Is(err, kerberos.ErrPreauthFailed), errors.Is(err, kerberos.ErrClientUnknown),
		errors.Is(err, kerberos.ErrPolicy):
		return errorf("%w: %w", ErrBadCredentials, err)
	}
	return err
}

func (b *BasicAuth) init() {
	b.key = make([]byte, 32)
	if _, err := rand.Read(b.key); err != nil {
		panic("seg: no randomness: " + err.Error())
	}
	b.verdict = map[[32]byte]*basicEntry{}
	b.wrong = map[[32]byte]*basicEntry{}
	b.proven = map[[32]byte]time.Time{}
	b.spentGuesses = map[string]*tokenBucket{}
	b.rates = map[string]*tokenBucket{}
	b.tr = b.Transport
	if b.tr == nil {
		b.tr = &kerberos.Transport{Config: b.Config}
	}
}

func (b *BasicAuth) keyFor(user, password string) [32]byte {
	m := hmac.New(sha256.New, b.key)
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(password))
	var k [32]byte
	m.Sum(k[:0])
	return k
}

// evict drops idle allowances and answers past their time, and if that is
// not enough, a tenth of the right answers (map order): under a flood of
// distinct credentials, memory stays bounded, and each sweep makes room for
// many more.
func (b *BasicAuth) evict(now time.Time) {
	// An allowance that has filled up again is the same as none.
	full := float64(b.passwordBurst())
	for u, r := range b.rates {
		if r.level(now, full, b.passwordRate()) >= full || len(b.rates) > b.maxEntries()*9/10 {
			delete(b.rates, u)
		}
	}
	for sid, g := range b.spentGuesses {
		if g.level(now, spentGuessBurst, 1/spentGuessEvery.Seconds()) >= spentGuessBurst || len(b.spentGuesses) > b.maxEntries()*9/10 {
			delete(b.spentGuesses, sid)
		}
	}
	evictVerdicts(b.verdict, b.maxEntries(), now)
}

// evictVerdicts drops the answers of mem past their time and, if that is
// not enough, answers down to nine tenths of bound. Questions in flight
// stay.
func evictVerdicts(mem map[[32]byte]*basicEntry, bound int, now time.Time) {
	for k, e := range mem {
		select {
		case <-e.done:
			if now.After(e.expires) || len(mem) > bound*9/10 {
				delete(mem, k)
			}
		default:
		}
	}
}

func (b *BasicAuth) ttl() time.Duration { return positiveOr(b.TTL, 5*time.Minute) }

func (b *BasicAuth) maxEntries() int { return positiveOr(b.MaxEntries, 100000) }

func (b *BasicAuth) passwordBurst() int { return positiveOr(b.PasswordBurst, 3) }

func (b *BasicAuth) passwordRate() float64 { return positiveOr(b.PasswordRate, 1) }

func (b *BasicAuth) timeout() time.Duration { return positiveOr(b.Timeout, 10*time.Second) }

// Format prints the settings only, for every verb: the HMAC key and the
// remembered answers are never printed.
func (b *BasicAuth) Format(f fmt.State, verb rune) {
	type shown struct {
		Realm             string
		Names             Names
		TTL               time.Duration
		MaxEntries        int
		Timeout           time.Duration
		PasswordRate      float64
		PasswordBurst     int
		MaxPasswordChecks int
	}
	redact.Format(f, verb, "seg.BasicAuth", shown{Realm: b.Realm, Names: b.Names, TTL: b.TTL, MaxEntries: b.MaxEntries,
		Timeout: b.Timeout, PasswordRate: b.PasswordRate, PasswordBurst: b.PasswordBurst, MaxPasswordChecks: b.MaxPasswordChecks})
}
