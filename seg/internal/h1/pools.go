// Package h1 is the gateway's HTTP/1.1 client: connections to the
// upstreams kept apart per user, one request at a time on each.
//
// It does what an http.Transport would, with less held per request that
// waits (a Ping held for an hour): the request waits on its caller's
// goroutine, not on a read loop and a write loop of the connection's own,
// and a read buffer is taken only once the answer begins. The wire format
// is net/http's (Request.Write, ReadResponse).
//
// Two ways to use a connection:
//   - RoundTrip sends a request and returns its answer, as an
//     http.RoundTripper does;
//   - Send sends a request and returns an Exchange: the caller waits for
//     the answer's first byte (Exchange.Await, with a deadline, so that it
//     can give up its goroutine and hand the socket, Exchange.Conn, to a
//     poller), then reads it (Exchange.Answer).
//
// Every connection carries one user's requests only, for its whole life:
// IIS binds Kerberos authentication to the TCP connection. The package
// knows nothing of tickets, parking or logging.
package h1

import (
	"container/list"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Config is what Pools are made from; the zero value of each field means
// its default. The fields mean what seg.UserPools' fields of the same
// names say.
type Config struct {
	TLSClientConfig        *tls.Config
	DialContext            func(ctx context.Context, network, addr string) (net.Conn, error)
	MaxConnsPerUser        int           // default 32
	MaxIdlePerUser         int           // default 2
	IdleTimeout            time.Duration // default 90s
	MaxUsers               int           // default 50000
	MaxResponseHeaderBytes int64         // default 1 MiB
	MaxDialsPerHost        int           // default 32
	DialBackoff            time.Duration // default 200ms
	// Authorize, when set, gives each request's Authorization header once
	// the connection it goes on is known, from the user whose connection it
	// is and that connection's TLS state (nil over plain TCP): a header
	// bound to the connection's channel, as IIS's Extended Protection
	// checks. A value replaces the request's own
	// header (RoundTrip and Send set it on req); "" keeps it. An error fails
	// the request before anything is written, and closes the connection.
	Authorize func(user string, req *http.Request, cs *tls.ConnectionState) (string, error)
}

// Pools are every user's connections: a pool per user, made on first use
// and closed when the user has had nothing in flight for IdleTimeout, with
// at most MaxUsers pools.
type Pools struct {
	cfg Config

	mu        sync.Mutex
	hosts     map[string]*hostDials    // upstream host -> its dials
	users     map[string]*list.Element // of *user
	lru       list.List                // front: most recently used
	tlsByHost map[string]*tls.Config   // one per upstream host, not one per connection
	sessions  tls.ClientSessionCache   // shared by the hosts' configurations
}

// New makes Pools with cfg, its zero values replaced by the defaults.
func New(cfg Config) *Pools {
	cfg.MaxConnsPerUser = positiveOr(cfg.MaxConnsPerUser, 32)
	cfg.MaxIdlePerUser = positiveOr(cfg.MaxIdlePerUser, 2)
	cfg.IdleTimeout = positiveOr(cfg.IdleTimeout, 90*time.Second)
	cfg.MaxUsers = positiveOr(cfg.MaxUsers, 50000)
	cfg.MaxResponseHeaderBytes = positiveOr(cfg.MaxResponseHeaderBytes, 1<<20)
	cfg.MaxDialsPerHost = positiveOr(cfg.MaxDialsPerHost, 32)
	cfg.DialBackoff = positiveOr(cfg.DialBackoff, 200*time.Millisecond)
	return &Pools{cfg: cfg, users: map[string]*list.Element{}}
}

// user is one user's pool.
type user struct {
	id      string
	conns   *conns
	active  int // requests in flight
	last    time.Time
	evicted bool // out of Pools.users: its connections close when active is 0
}

// RoundTrip sends req over one of user's connections to its host and
// returns the answer; closing its body ends the request. req's context
// bounds the whole of it, the body's reading included.
func (p *Pools) RoundTrip(user string, req *http.Request) (*http.Response, error) {
	u := p.acquire(user)
	resp, err := u.conns.roundTrip(req)
	if err != nil {
		p.release(u)
		return nil, err
	}
	// The connection is busy until the body is done with.
	resp.Body = &releaseOnClose{ReadCloser: resp.Body, release: func() { p.release(u) }}
	return resp, nil
}

// Send writes req, whole, over one of user's connections to its host, and
// returns the exchange whose answer is still to come. req's context bounds
// the sending only (the dial, the write); the request's body must be in
// memory (GetBody set, or none), as a long poll's is. Nothing of req is
// kept but its method: its headers and their ticket are not held for as
// long as the answer waits.
func (p *Pools) Send(user string, req *http.Request) (*Exchange, error) {
	u := p.acquire(user)
	x, err := u.conns.send(req)
	if err != nil {
		p.release(u)
		return nil, err
	}
	x.release = func() { p.release(u) }
	return x, nil
}

// CloseIdleConnections closes every user's idle connections.
func (p *Pools) CloseIdleConnections() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for e := p.lru.Front(); e != nil; e = e.Next() {
		e.Value.(*user).conns.closeIdle(false)
	}
}

// Users reports how many users have a pool.
func (p *Pools) Users() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lru.Len()
}

type releaseOnClose struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

func (r *releaseOnClose) Close() error {
	err := r.ReadCloser.Close()
	r.once.Do(r.release)
	return err
}

// acquire counts a request in flight for id's pool, made if need be.
func (p *Pools) acquire(id string) *user {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	p.sweep(now)
	if e, ok := p.users[id]; ok {
		u := e.Value.(*user)
		u.active++
		u.last = now
		p.lru.MoveToFront(e)
		return u
	}
	u := &user{id: id, conns: newConns(p, id), active: 1, last: now}
	p.users[id] = p.lru.PushFront(u)
	for p.lru.Len() > p.cfg.MaxUsers {
		if !p.evictOldestIdle() {
			break
		}
	}
	return u
}

// release counts a request of u's done.
func (p *Pools) release(u *user) {
	p.mu.Lock()
	defer p.mu.Unlock()
	u.active--
	u.last = time.Now()
	if u.active == 0 && u.evicted {
		u.conns.closeIdle(true)
	}
}

// sweep evicts the pools that have been idle for IdleTimeout. The list is
// in order of last use, so it stops at the first recent one.
func (p *Pools) sweep(now time.Time) {
	for e := p.lru.Back(); e != nil; {
		u := e.Value.(*user)
		if now.Sub(u.last) < p.cfg.IdleTimeout {
			return
		}
		prev := e.Prev()
		if u.active == 0 {
			p.evict(e)
		}
		e = prev
	}
}

func (p *Pools) evictOldestIdle() bool {
	for e := p.lru.Back(); e != nil; e = e.Prev() {
		if e.Value.(*user).active == 0 {
			p.evict(e)
			return true
		}
	}
	return false
}

// evict takes a user's pool out; a user in flight is never cut off: a pool
// evicted while busy closes its connections once its last request ends.
func (p *Pools) evict(e *list.Element) {
	u := e.Value.(*user)
	p.lru.Remove(e)
	delete(p.users, u.id)
	u.evicted = true
	if u.active == 0 {
		u.conns.closeIdle(true)
	}
}

// errServerClosedIdle: a reused connection ended before any byte of the
// answer, as when the server closed it while idle just as the request went
// (get peeks at an idle connection first, which finds the usual case before
// anything is sent). The request goes again on a new connection only when
// its method is idempotent (RFC 9110 9.2.2) and its body can be sent again:
// Exchange may have acted on a POST (SendMail) before the connection broke.
var errServerClosedIdle = errors.New("upstream closed a kept-alive connection")

// ErrHeadersTooLong: an upstream answer's headers (interim answers'
// included) ran past Config.MaxResponseHeaderBytes.
var ErrHeadersTooLong = errors.New("the upstream answer's headers are longer than MaxResponseHeaderBytes")

// ErrSwitchedProtocols: the upstream answered 101, which no request of the
// gateway's asks for.
var ErrSwitchedProtocols = errors.New("upstream switched protocols")

func positiveOr[T int | int64 | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// canonicalAddr is req's host:port, the port from the scheme when absent.
func canonicalAddr(req *http.Request) string {
	port := req.URL.Port()
	if port == "" {
		port = "443"
		if req.URL.Scheme == "http" {
			port = "80"
		}
	}
	return net.JoinHostPort(req.URL.Hostname(), port)
}
