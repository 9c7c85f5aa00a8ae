package seg

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

// UserTransport gives the RoundTripper for one user's upstream requests.
// Every connection behind it must carry that user's requests only, for its
// whole life: IIS binds Kerberos authentication to the TCP connection, so a
// connection that once carried alice's ticket serves alice's mailbox even to a
// request with no Authorization header (traefik #3792, haproxy #2985). A
// shared connection pool, HTTP/2 included, would hand one user's mailbox to
// the next.
type UserTransport interface {
	ForUser(user string) http.RoundTripper
}

// UserPools is the default UserTransport: HTTP/1.1 connections of its own
// for each user, created on first use and closed when the user has had no
// request in flight for IdleTimeout, with at most MaxUsers pools. The zero
// value is ready to use.
//
// It is not an http.Transport per user, which it was: a request that waits
// (a Ping held for an hour) waits on the handler's goroutine, where an
// http.Transport connection keeps a read loop and a write loop of its own
// and their buffers; buffers are taken while bytes move. The wire format is
// net/http's (Request.Write, ReadResponse). Responses carry no TLS state
// (Response.TLS is nil), which a ModifyResponse hook should not expect.
type UserPools struct {
	// TLSClientConfig is used for https upstreams (nil: system roots).
	TLSClientConfig *tls.Config
	// DialContext dials upstream connections (nil: a net.Dialer with a 10s
	// timeout and TCP keep-alives).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// MaxConnsPerUser bounds one user's connections to one upstream host
	// (default 32: a user's devices each hold a Ping or Sync open).
	MaxConnsPerUser int
	// MaxIdlePerUser bounds a user's idle connections (default 2).
	MaxIdlePerUser int
	// IdleTimeout closes idle connections and drops the pools of users who
	// have nothing in flight (default 90s).
	IdleTimeout time.Duration
	// MaxUsers bounds the pools; the least recently used idle pool is
	// closed first (default 50000). A user in flight is never cut off: a
	// pool dropped while busy closes its connections once its last request
	// ends.
	MaxUsers int
	// MaxResponseHeaderBytes bounds an upstream answer's headers (default
	// 1 MiB; Exchange's are a few KiB): past it the answer is refused (502)
	// and its connection closed, rather than read into memory without end.
	MaxResponseHeaderBytes int64
	// MaxDialsPerHost bounds the connections being opened (TCP and TLS
	// handshake) to one upstream host at once, for all users together
	// (default 32); more wait their turn. When Exchange restarts, every
	// user's pool would otherwise dial it at the same moment.
	MaxDialsPerHost int
	// DialBackoff is the first pause after a failed dial to a host
	// (default 200ms); it doubles with each failure in a row up to 10s, and
	// each is drawn at random between half and all of it, so that replicas
	// and users do not come back in step. A dial that finds less than a
	// second of the pause left waits it out; past that, dials to the host
	// fail at once with the last error (the device gets 502 and asks
	// again). The first dial that succeeds ends the pauses.
	DialBackoff time.Duration

	mu        sync.Mutex
	hosts     map[string]*hostDials    // upstream host -> its dials
	users     map[string]*list.Element // of *userPool
	lru       list.List                // front: most recently used
	tlsByHost map[string]*tls.Config   // one per upstream host, not one per connection
	sessions  tls.ClientSessionCache   // shared by the hosts' configurations
}

type userPool struct {
	user    string
	t       *h1Conns
	active  int
	last    time.Time
	dropped bool
}

// ForUser implements UserTransport.
func (p *UserPools) ForUser(user string) http.RoundTripper {
	return &userRoundTripper{pools: p, user: user}
}

// CloseIdleConnections closes every user's idle connections.
func (p *UserPools) CloseIdleConnections() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for e := p.lru.Front(); e != nil; e = e.Next() {
		e.Value.(*userPool).t.closeIdle(false)
	}
}

// userCount reports how many users have a pool.
func (p *UserPools) userCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lru.Len()
}

type userRoundTripper struct {
	pools *UserPools
	user  string
}

func (u *userRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	up := u.pools.acquire(u.user)
	resp, err := up.t.RoundTrip(req)
	if errors.Is(err, errParked) {
		// The connection stays busy until the answer that waits is read.
		hint := req.Context().Value(parkHintKey{}).(*parkHint)
		hint.pending.release = func() { u.pools.release(up) }
		return nil, err
	}
	if err != nil {
		u.pools.release(up)
		return nil, err
	}
	// The connection is busy until the body is done with.
	resp.Body = &releaseOnClose{ReadCloser: resp.Body, release: func() { u.pools.release(up) }}
	return resp, nil
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

func (p *UserPools) acquire(user string) *userPool {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if p.users == nil {
		p.users = map[string]*list.Element{}
	}
	p.sweep(now)
	if e, ok := p.users[user]; ok {
		up := e.Value.(*userPool)
		up.active++
		up.last = now
		p.lru.MoveToFront(e)
		return up
	}
	up := &userPool{user: user, t: p.newTransport(), active: 1, last: now}
	p.users[user] = p.lru.PushFront(up)
	for p.lru.Len() > p.maxUsers() {
		if !p.dropOldestIdle() {
			break
		}
	}
	return up
}

func (p *UserPools) release(up *userPool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	up.active--
	up.last = time.Now()
	if up.active == 0 && up.dropped {
		up.t.closeIdle(true)
	}
}

// sweep drops the pools that have been idle for IdleTimeout. The list is in
// order of last use, so it stops at the first recent one.
func (p *UserPools) sweep(now time.Time) {
	for e := p.lru.Back(); e != nil; {
		up := e.Value.(*userPool)
		if now.Sub(up.last) < p.idleTimeout() {
			return
		}
		prev := e.Prev()
		if up.active == 0 {
			p.drop(e)
		}
		e = prev
	}
}

func (p *UserPools) dropOldestIdle() bool {
	for e := p.lru.Back(); e != nil; e = e.Prev() {
		if e.Value.(*userPool).active == 0 {
			p.drop(e)
			return true
		}
	}
	return false
}

func (p *UserPools) drop(e *list.Element) {
	up := e.Value.(*userPool)
	p.lru.Remove(e)
	delete(p.users, up.user)
	up.dropped = true
	if up.active == 0 {
		up.t.closeIdle(true)
	}
}

func (p *UserPools) newTransport() *h1Conns {
	return &h1Conns{pools: p, idle: map[string][]*h1Conn{}, open: map[string]int{}, changed: make(chan struct{})}
}

func (p *UserPools) maxConnsPerUser() int { return positiveOr(p.MaxConnsPerUser, 32) }

func (p *UserPools) maxIdlePerUser() int { return positiveOr(p.MaxIdlePerUser, 2) }

func (p *UserPools) maxResponseHeaderBytes() int64 {
	return positiveOr(p.MaxResponseHeaderBytes, 1<<20)
}

func (p *UserPools) idleTimeout() time.Duration {
	if p.IdleTimeout > 0 {
		return p.IdleTimeout
	}
	return 90 * time.Second
}

func (p *UserPools) maxUsers() int {
	if p.MaxUsers > 0 {
		return p.MaxUsers
	}
	return 50000
}
