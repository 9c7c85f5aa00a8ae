package h1

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"
)

// dial opens a connection to req's host: TCP, then TLS for https, with the
// host's TLS configuration (HTTP/1.1 only). It returns the connection to use
// and the TCP connection under it.
func (p *Pools) dial(ctx context.Context, req *http.Request) (net.Conn, net.Conn, error) {
	addr := canonicalAddr(req)
	hd := p.hostDials(addr)
	if err := hd.take(ctx); err != nil {
		return nil, nil, err
	}
	conn, raw, err := p.dialHost(ctx, req, addr)
	hd.release(err, ctx.Err() != nil, p.cfg.DialBackoff)
	return conn, raw, err
}

// hostDials bounds and paces the dials to one upstream host.
type hostDials struct {
	slots chan struct{}

	mu       sync.Mutex
	failures int       // dials failed in a row
	until    time.Time // no dial before, while failures > 0
	last     error     // the last failure
}

// ErrDialBackoff is the error of a dial refused while its host's back-off
// runs (Config.DialBackoff), with the failure that started it. It comes
// inside a *net.OpError whose Op is "dial", as any dial error does.
var ErrDialBackoff = errors.New("upstream dials paused after failures")

func (p *Pools) hostDials(addr string) *hostDials {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hosts == nil {
		p.hosts = map[string]*hostDials{}
	}
	hd := p.hosts[addr]
	if hd == nil {
		hd = &hostDials{slots: make(chan struct{}, p.cfg.MaxDialsPerHost)}
		p.hosts[addr] = hd
	}
	return hd
}

// take takes a dial slot, or refuses while the back-off runs. A pause
// that ends within a second is waited out (an Exchange restarted in a
// moment costs its users a short wait, not a 502); a longer one is not.
func (hd *hostDials) take(ctx context.Context) error {
	hd.mu.Lock()
	if left := time.Until(hd.until); hd.failures > 0 && left > 0 {
		err := hd.last
		hd.mu.Unlock()
		if left > time.Second {
			// A dial error, as the health check and the log expect one.
			return &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("%w: %w", ErrDialBackoff, err)}
		}
		t := time.NewTimer(left)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	} else {
		hd.mu.Unlock()
	}
	select {
	case hd.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	// A dial that waited its turn while others failed does not try again.
	hd.mu.Lock()
	paused := hd.failures > 0 && time.Now().Before(hd.until)
	last := hd.last
	hd.mu.Unlock()
	if paused {
		<-hd.slots
		return &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("%w: %w", ErrDialBackoff, last)}
	}
	return nil
}

// release gives the slot back and records how the dial went; a dial cut by
// its request's end says nothing of the host.
func (hd *hostDials) release(err error, cancelled bool, backoff time.Duration) {
	<-hd.slots
	hd.mu.Lock()
	defer hd.mu.Unlock()
	switch {
	case err == nil:
		hd.failures, hd.last = 0, nil
	case cancelled:
	case hd.failures > 0 && time.Now().Before(hd.until):
		// Dials begun before the pause that fail with the first are one
		// failure, not a run of them.
	default:
		hd.failures++
		d := min(backoff<<min(hd.failures-1, 16), 10*time.Second)
		d = d/2 + rand.N(d/2+1)
		hd.until, hd.last = time.Now().Add(d), err
	}
}

// dialHost dials addr: TCP, then TLS for https.
func (p *Pools) dialHost(ctx context.Context, req *http.Request, addr string) (net.Conn, net.Conn, error) {
	dial := p.cfg.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	raw, err := dial(ctx, "tcp", addr)
	if err != nil {
		var op *net.OpError
		if !errors.As(err, &op) {
			err = &net.OpError{Op: "dial", Net: "tcp", Err: err}
		}
		return nil, nil, err
	}
	if req.URL.Scheme != "https" {
		return raw, raw, nil
	}
	tc := tls.Client(raw, p.tlsConfig(req.URL.Hostname()))
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, nil, err
	}
	return tc, raw, nil
}

// tlsConfig is the TLS configuration for host, made once per host.
func (p *Pools) tlsConfig(host string) *tls.Config {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.tlsByHost[host]; ok {
		return c
	}
	var c *tls.Config
	if p.cfg.TLSClientConfig != nil {
		c = p.cfg.TLSClientConfig.Clone()
	} else {
		c = &tls.Config{}
	}
	if c.ServerName == "" {
		c.ServerName = host
	}
	// HTTP/1.1 only: one request per connection at a time keeps the
	// connection's authentication and the request's ticket the same user's.
	c.NextProtos = []string{"http/1.1"}
	// TLS sessions are resumed across users' connections: a session
	// carries no HTTP authentication (IIS binds Kerberos to the TCP
	// connection, and a resumed session is a new one), and resumption
	// spares a full handshake per user and the certificate chain's
	// buffers that a connection keeps for its life.
	if c.ClientSessionCache == nil {
		if p.sessions == nil {
			p.sessions = tls.NewLRUClientSessionCache(0)
		}
		c.ClientSessionCache = p.sessions
	}
	if p.tlsByHost == nil {
		p.tlsByHost = map[string]*tls.Config{}
	}
	p.tlsByHost[host] = c
	return c
}
