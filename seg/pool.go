package seg

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/segkcd/segkcd/seg/internal/h1"
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
// value is ready to use; set the fields before the first request.
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

	once  sync.Once
	pools *h1.Pools
}

// h1 is the connections, made from the fields at first use.
func (p *UserPools) h1() *h1.Pools {
	p.once.Do(func() {
		p.pools = h1.New(h1.Config{TLSClientConfig: p.TLSClientConfig, DialContext: p.DialContext,
			MaxConnsPerUser: p.MaxConnsPerUser, MaxIdlePerUser: p.MaxIdlePerUser, IdleTimeout: p.IdleTimeout,
			MaxUsers: p.MaxUsers, MaxResponseHeaderBytes: p.MaxResponseHeaderBytes,
			MaxDialsPerHost: p.MaxDialsPerHost, DialBackoff: p.DialBackoff,
			// A gateway request's Negotiate header is made on the
			// connection it goes on, bound to its TLS channel.
			Authorize: authorizeOnConn})
	})
	return p.pools
}

// ForUser implements UserTransport.
func (p *UserPools) ForUser(user string) http.RoundTripper {
	return userRoundTripper{pools: p.h1(), user: user}
}

// CloseIdleConnections closes every user's idle connections.
func (p *UserPools) CloseIdleConnections() { p.h1().CloseIdleConnections() }

// userCount reports how many users have a pool.
func (p *UserPools) userCount() int { return p.h1().Users() }

type userRoundTripper struct {
	pools *h1.Pools
	user  string
}

func (u userRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	return u.pools.RoundTrip(u.user, req)
}
