package seg

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/segkcd/segkcd/internal/proxyproto"
)

// ProxyProtocolListener accepts connections from load balancers that pass
// TCP through and announce each client with a PROXY protocol header (version
// 1 or 2, as HAProxy's send-proxy and send-proxy-v2 write it). A balancer in
// front of the gateway has to pass TLS through, since the gateway checks the
// devices' client certificates itself; the PROXY protocol is then the only
// way the client's address can reach the gateway. The connections it returns
// give the client's address as RemoteAddr (which ProxyHandler counts failed
// logins by, and logs), and can still be parked (they keep SyscallConn).
//
// Every connection must come from Trusted and start with a header; one
// from elsewhere is closed unread, and one whose header is malformed or does
// not come within HeaderTimeout fails its first read. A LOCAL header (the
// balancer's own health check) keeps the connection's own addresses.
type ProxyProtocolListener struct {
	// Listener accepts the connections from the balancers.
	Listener net.Listener
	// Trusted are the balancers' addresses. Required: a header is believed
	// from these only.
	Trusted []netip.Prefix
	// HeaderTimeout bounds the wait for the header (default 5s).
	HeaderTimeout time.Duration
}

// Accept waits for the next connection from a trusted balancer. The header
// is read by the connection's first Read or RemoteAddr, in the goroutine
// that serves it, not here: one slow balancer connection never holds up the
// others.
func (l *ProxyProtocolListener) Accept() (net.Conn, error) {
	if len(l.Trusted) == 0 {
		return nil, errors.New("seg: ProxyProtocolListener needs Trusted")
	}
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.trusted(c.RemoteAddr()) {
			return &proxiedConn{Conn: c, timeout: positiveOr(l.HeaderTimeout, 5*time.Second)}, nil
		}
		c.Close()
	}
}

func (l *ProxyProtocolListener) trusted(a net.Addr) bool {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return false
	}
	for _, p := range l.Trusted {
		if p.Contains(ap.Addr().Unmap()) || p.Contains(ap.Addr()) {
			return true
		}
	}
	return false
}

// Close closes Listener.
func (l *ProxyProtocolListener) Close() error { return l.Listener.Close() }

// Addr is Listener's.
func (l *ProxyProtocolListener) Addr() net.Addr { return l.Listener.Addr() }

// proxiedConn reads its PROXY header on first use.
type proxiedConn struct {
	net.Conn
	timeout time.Duration

	once         sync.Once
	err          error // a malformed or missing header
	remote       net.Addr
	local        net.Addr
	mu           sync.Mutex
	readDeadline time.Time // as the user set it, to restore after the header
}

// ErrProxyHeader is matched by the error of the first read of a connection
// whose PROXY protocol header is malformed or did not come in time.
var ErrProxyHeader = errors.New("seg: no valid PROXY protocol header from the balancer")

func (c *proxiedConn) header() error {
	c.once.Do(func() {
		c.remote, c.local = c.Conn.RemoteAddr(), c.Conn.LocalAddr()
		c.mu.Lock()
		user := c.readDeadline
		c.mu.Unlock()
		d := time.Now().Add(c.timeout)
		if !user.IsZero() && user.Before(d) {
			d = user
		}
		c.Conn.SetReadDeadline(d)
		h, err := proxyproto.Read(c.Conn)
		c.mu.Lock()
		c.Conn.SetReadDeadline(c.readDeadline)
		c.mu.Unlock()
		if err != nil {
			c.err = &opaqueError{msg: ErrProxyHeader.Error() + ": " + err.Error(), err: errors.Join(ErrProxyHeader, err)}
			return
		}
		if !h.Local {
			c.remote = net.TCPAddrFromAddrPort(h.Source)
			c.local = net.TCPAddrFromAddrPort(h.Dest)
		}
	})
	return c.err
}

func (c *proxiedConn) Read(p []byte) (int, error) {
	if err := c.header(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

// RemoteAddr is the client's address as the header gives it (the
// balancer's when the header is LOCAL or malformed).
func (c *proxiedConn) RemoteAddr() net.Addr {
	c.header()
	return c.remote
}

// LocalAddr is the address the client connected to, as the header gives it.
func (c *proxiedConn) LocalAddr() net.Addr {
	c.header()
	return c.local
}

func (c *proxiedConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.readDeadline = t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *proxiedConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.readDeadline = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

// SyscallConn is the socket's: the header has been read whole and nothing
// past it, so a parked long poll can watch the socket itself.
func (c *proxiedConn) SyscallConn() (syscall.RawConn, error) {
	if err := c.header(); err != nil {
		return nil, err
	}
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("seg: the balancer's connection has no socket")
	}
	return sc.SyscallConn()
}
