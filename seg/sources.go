package seg

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// ErrSourceLimited is the error for a login that would make the KDC work
// (a Basic name not remembered, a new password) from a source that has spent
// its failed logins (ProxyHandler.FailedLoginBurst and FailedLoginRate). It
// is refused without asking the KDC, and the device is told to try again
// later (503, Retry-After). What needs no question to the KDC (a password
// checked right within BasicAuth.TTL, a certificate) still passes: a phone
// behind the same carrier NAT as an attacker keeps working while its
// password is remembered.
var ErrSourceLimited = errors.New("seg: too many failed logins from this address; try again later")

// sourceState is what a request's source has done before: nothing wrong
// (the zero value), failed logins, or all the failed logins it may have.
type sourceState int

const (
	sourceClean sourceState = iota
	sourceFailed
	sourceExhausted
)

// sourceKey carries a request's sourceState when it is not clean.
type sourceKey struct{}

// sourceSpent reports whether the request's source has spent its failed
// logins: no unproven name or new password of it is asked of the KDC.
func sourceSpent(ctx context.Context) bool {
	v, _ := ctx.Value(sourceKey{}).(sourceState)
	return v == sourceExhausted
}

// unprovenLimit is how many of a gateway-wide bound of questions for
// unproven names or passwords (max) a request may find in flight and still
// ask: all of them from a source without failed logins, half from one with
// some. A flood's sources fail at once, and then leave half the bound to
// real users signing in for the first time from sources that have not.
func unprovenLimit(ctx context.Context, max int) int {
	if v, _ := ctx.Value(sourceKey{}).(sourceState); v != sourceClean {
		return (max + 1) / 2
	}
	return max
}

// failedLogins is a token bucket of failed logins per source: an IPv4
// address, or the /64 of an IPv6 one (which one subscriber gets whole).
// An IPv6 /64 also spends from its /48's bucket, which holds sharedScale
// times as much: a site or a tunnel broker's customer gets a /48, and
// would otherwise have 65,536 fresh allowances to rotate through. A spent
// /48 halves its /64s' share of the unproven budgets (sourceFailed) but
// refuses nothing by itself.
// The source is the request's RemoteAddr: the peer's address, or the
// client's as a PROXY protocol header gives it (ProxyProtocolListener).
type failedLogins struct {
	burst float64
	rate  float64 // tokens per second
	max   int

	mu sync.Mutex
	m  map[netip.Prefix]*tokenBucket
}

// source is the key of a request's source, or false when RemoteAddr holds
// no address (a listener of another kind: nothing is limited).
func source(remoteAddr string) (netip.Prefix, bool) {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		host, _, herr := net.SplitHostPort(remoteAddr)
		if herr != nil {
			return netip.Prefix{}, false
		}
		a, perr := netip.ParseAddr(host)
		if perr != nil {
			return netip.Prefix{}, false
		}
		ap = netip.AddrPortFrom(a, 0)
	}
	a := ap.Addr().Unmap().WithZone("")
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p, true
}

// sharedScale is how many /64s' worth of failed logins an IPv6 /48 holds.
const sharedScale = 16

// buckets are the keys src spends from: itself, and its /48 for an IPv6 /64.
func buckets(src netip.Prefix) []netip.Prefix {
	if src.Bits() == 64 {
		site, _ := src.Addr().Prefix(48)
		return []netip.Prefix{src, site}
	}
	return []netip.Prefix{src}
}

// scale is how many sources' worth a bucket holds.
func scale(p netip.Prefix) float64 {
	if p.Bits() == 48 {
		return sharedScale
	}
	return 1
}

// state says whether src has failed logins, and whether it has any left:
// spent when it is; a /48 spent by its /64s only marks them as failed.
func (f *failedLogins) state(src netip.Prefix, now time.Time) sourceState {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := sourceClean
	for _, k := range buckets(src) {
		r := f.m[k]
		if r == nil {
			continue
		}
		switch left := f.refill(k, r, now); {
		case left >= f.burst*scale(k):
			delete(f.m, k) // filled up again: as clean as one that never failed
		case left >= 1:
			st = max(st, sourceFailed)
		case k == src:
			return sourceExhausted
		default:
			// A /48 spent by its neighbours halves this /64's share
			// of the budgets, and refuses nothing by itself: a carrier's
			// pool may hold many subscribers.
			st = max(st, sourceFailed)
		}
	}
	return st
}

// failed takes one failed login from src's allowance, and its /48's.
func (f *failedLogins) failed(src netip.Prefix, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[netip.Prefix]*tokenBucket{}
	}
	for _, k := range buckets(src) {
		r := f.m[k]
		if r == nil {
			if len(f.m) >= f.max {
				f.evict(now)
			}
			r = &tokenBucket{tokens: f.burst * scale(k), last: now}
			f.m[k] = r
		}
		r.tokens = max(0, f.refill(k, r, now)-1)
	}
}

// refill brings k's tokens up to now and returns them. f.mu is held.
func (f *failedLogins) refill(k netip.Prefix, r *tokenBucket, now time.Time) float64 {
	return r.refill(now, f.burst*scale(k), f.rate*scale(k))
}

// evict drops sources whose allowance has filled up again (the same as no
// entry), then, if that is not enough, the tenth of the rest with the most
// left: a flood from many addresses keeps the memory bounded and the most
// spent sources limited.
func (f *failedLogins) evict(now time.Time) {
	for k, r := range f.m {
		if f.refill(k, r, now) >= f.burst*scale(k) {
			delete(f.m, k)
		}
	}
	for k, r := range f.m {
		if len(f.m) < f.max*9/10 {
			break
		}
		if r.tokens >= 1 {
			delete(f.m, k)
		}
	}
	for k := range f.m {
		if len(f.m) < f.max*9/10 {
			break
		}
		delete(f.m, k)
	}
}

// countsAgainstSource tells a failed login (credentials refused, a name no
// account holds) from a request without credentials (a device's first
// request, answered with the challenge) and from failures of the gateway's
// own (the KDC down, a bound reached).
func countsAgainstSource(err error) bool {
	return errors.Is(err, ErrBadCredentials) || errors.Is(err, ErrBadName)
}
