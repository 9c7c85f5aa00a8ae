package seg

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jcmturner/gokrb5/v8/config"

	"github.com/segkcd/segkcd/internal/redact"
	"github.com/segkcd/segkcd/kerberos"
)

// BasicAuth authenticates devices that send a user name and password
// (HTTP Basic). The password is checked with a Kerberos AS exchange for the
// user against the domain's KDC, not with an LDAP bind.
//
// Every answer is remembered for TTL under an HMAC of (user, password) with
// a key drawn at random for each BasicAuth, never the password itself: a
// correct password so that a phone's requests do not each cost an AS
// exchange, and a wrong one so that a phone stuck on an old password costs
// AD one failed logon per TTL, not one per request. AD counts every failure
// against its lockout threshold; a gateway that passed each retry on would
// lock its users out. Concurrent checks of the same credentials share one
// exchange.
//
// Distinct wrong passwords for one user are bounded too: after MaxFailures
// of them within TTL, further new passwords for that user are refused
// without asking the KDC until the window ends (a correct password seen
// before stays accepted). Someone guessing through the gateway then costs
// AD at most MaxFailures bad logons per TTL, below any sane lockout
// threshold, instead of locking the account for everyone.
type BasicAuth struct {
	// Realm is the users' Kerberos realm.
	Realm string
	// Config lists the realm's KDCs (kerberos.LoadConfig, NewConfig).
	Config *config.Config
	// Transport sends the AS exchanges; nil means one of its own over
	// Config. Share the service account's to share its KDC ordering.
	Transport *kerberos.Transport
	// Names maps the login name to the user (UPN, DOMAIN\user, bare).
	Names Names
	// TTL is how long an answer, right or wrong, is remembered (default 5m).
	TTL time.Duration
	// MaxEntries bounds the remembered answers (default 100000).
	MaxEntries int
	// Timeout bounds one AS exchange (default 10s).
	Timeout time.Duration
	// MaxFailures bounds the distinct wrong passwords per user and TTL that
	// are sent to the KDC (default 3).
	MaxFailures int

	once    sync.Once
	key     []byte
	tr      *kerberos.Transport
	mu      sync.Mutex
	verdict map[[32]byte]*basicEntry
	fails   map[string]*failWindow // upper-cased user -> wrong passwords sent to the KDC
	pending map[string]int         // upper-cased user -> exchanges in flight
}

type failWindow struct {
	count int
	until time.Time
}

// ErrTooManyFailures is matched (with ErrBadCredentials) when a user's
// new password is refused without asking the KDC, after MaxFailures wrong
// ones within TTL.
var ErrTooManyFailures = errors.New("seg: too many wrong passwords for this user; try again later")

type basicEntry struct {
	done    chan struct{} // closed when err is set
	err     error         // nil: password right
	expires time.Time
}

// Authenticate implements ProxyHandler.Authenticate.
func (b *BasicAuth) Authenticate(r *http.Request) (*Identity, error) {
	name, password, ok := r.BasicAuth()
	if !ok {
		return nil, ErrNoCredentials
	}
	user, err := b.Names.User(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCredentials, err)
	}
	if password == "" {
		return nil, fmt.Errorf("%w: empty password", ErrBadCredentials)
	}
	if err := b.Check(r.Context(), user, password); err != nil {
		return nil, err
	}
	return &Identity{User: user, Name: name, Method: "basic"}, nil
}

// Check verifies user's password, from memory when it was checked within
// TTL. A wrong password is an error matching ErrBadCredentials (and
// kerberos.ErrPreauthFailed); an account the KDC refuses (disabled, locked,
// expired) matches ErrBadCredentials and kerberos.ErrPolicy; a KDC that
// does not answer gives the kerberos error (ErrNoKDC), which is not
// remembered.
func (b *BasicAuth) Check(ctx context.Context, user, password string) error {
	b.once.Do(b.init)
	k := b.keyFor(user, password)
	now := time.Now()
	b.mu.Lock()
	e := b.verdict[k]
	if e != nil {
		select {
		case <-e.done:
			if now.After(e.expires) {
				delete(b.verdict, k)
				e = nil
			}
		default:
		}
	}
	owner := e == nil
	fkey := strings.ToUpper(user)
	if owner {
		// Exchanges in flight count as failures until they answer, so that
		// guesses sent all at once are bounded as well.
		failed := b.pending[fkey]
		if f := b.fails[fkey]; f != nil && now.Before(f.until) {
			failed += f.count
		}
		if failed >= b.maxFailures() {
			b.mu.Unlock()
			return fmt.Errorf("%w: %w", ErrBadCredentials, ErrTooManyFailures)
		}
		b.pending[fkey]++
		if len(b.verdict) >= b.maxEntries() {
			b.evict(now)
		}
		e = &basicEntry{done: make(chan struct{})}
		b.verdict[k] = e
	}
	b.mu.Unlock()

	if owner {
		err := b.exchange(user, password)
		b.mu.Lock()
		if b.pending[fkey]--; b.pending[fkey] <= 0 {
			delete(b.pending, fkey)
		}
		e.err = err
		e.expires = time.Now().Add(b.ttl())
		switch {
		case err == nil:
			delete(b.fails, fkey) // as AD resets badPwdCount on a good logon
		case errors.Is(err, kerberos.ErrPreauthFailed):
			f := b.fails[fkey]
			if f == nil || !time.Now().Before(f.until) {
				f = &failWindow{until: time.Now().Add(b.ttl())}
				b.fails[fkey] = f
			}
			f.count++
		}
		if err != nil && !remembered(err) {
			delete(b.verdict, k)
		}
		b.mu.Unlock()
		close(e.done)
	}
	select {
	case <-e.done:
		return e.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// remembered tells the answers about the credentials from failures of the
// way to the KDC.
func remembered(err error) bool { return errors.Is(err, ErrBadCredentials) }

func (b *BasicAuth) exchange(user, password string) error {
	// Not the request's context: waiters share this exchange, and one
	// device hanging up must not fail the others.
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout())
	defer cancel()
	c := kerberos.NewWithPassword(user, b.Realm, password, b.Config)
	c.Transport = b.tr
	_, err := c.TGT(ctx)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kerberos.ErrPreauthFailed), errors.Is(err, kerberos.ErrClientUnknown),
		errors.Is(err, kerberos.ErrPolicy):
		return fmt.Errorf("%w: %w", ErrBadCredentials, err)
	}
	return err
}

func (b *BasicAuth) init() {
	b.key = make([]byte, 32)
	if _, err := rand.Read(b.key); err != nil {
		panic("seg: no randomness: " + err.Error())
	}
	b.verdict = map[[32]byte]*basicEntry{}
	b.fails = map[string]*failWindow{}
	b.pending = map[string]int{}
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

// evict drops expired answers and failure windows, and if that is not
// enough, arbitrary answers (map order): under a flood of distinct
// credentials, memory stays bounded.
func (b *BasicAuth) evict(now time.Time) {
	for u, f := range b.fails {
		if !now.Before(f.until) || len(b.fails) > b.maxEntries() {
			delete(b.fails, u)
		}
	}
	for k, e := range b.verdict {
		select {
		case <-e.done:
			if now.After(e.expires) {
				delete(b.verdict, k)
			}
		default:
		}
	}
	for k, e := range b.verdict {
		if len(b.verdict) < b.maxEntries() {
			break
		}
		select {
		case <-e.done:
			delete(b.verdict, k)
		default:
		}
	}
}

func (b *BasicAuth) ttl() time.Duration {
	if b.TTL > 0 {
		return b.TTL
	}
	return 5 * time.Minute
}

func (b *BasicAuth) maxEntries() int {
	if b.MaxEntries > 0 {
		return b.MaxEntries
	}
	return 100000
}

func (b *BasicAuth) maxFailures() int {
	if b.MaxFailures > 0 {
		return b.MaxFailures
	}
	return 3
}

func (b *BasicAuth) timeout() time.Duration {
	if b.Timeout > 0 {
		return b.Timeout
	}
	return 10 * time.Second
}

// Format prints the settings only, for every verb: the HMAC key and the
// remembered answers are never printed.
func (b *BasicAuth) Format(f fmt.State, verb rune) {
	type shown struct {
		Realm       string
		Names       Names
		TTL         time.Duration
		MaxEntries  int
		Timeout     time.Duration
		MaxFailures int
	}
	redact.Format(f, verb, "seg.BasicAuth", shown{Realm: b.Realm, Names: b.Names, TTL: b.TTL, MaxEntries: b.MaxEntries,
		Timeout: b.Timeout, MaxFailures: b.MaxFailures})
}
