package seg

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"
)

// h1Conns are one user's HTTP/1.1 connections to the upstreams, one request
// at a time on each. It does what an http.Transport would, with less held
// per request that waits (a Ping held for an hour): the request waits on the
// caller's goroutine, not on a read loop and a write loop of the
// connection's own, and a read buffer is taken only once the answer begins.
// The wire format is net/http's (Request.Write, ReadResponse).
type h1Conns struct {
	pools *UserPools

	mu      sync.Mutex
	idle    map[string][]*h1Conn // by scheme://host:port, most recent last
	open    map[string]int       // connections per host, idle or busy
	changed chan struct{}        // closed and replaced when a connection is freed
	closed  bool                 // the pool was dropped: no connection goes idle
}

// h1Conn is one upstream connection.
type h1Conn struct {
	key    string
	conn   net.Conn // TLS over raw, or raw
	raw    net.Conn
	reused bool        // carried a request before
	timer  *time.Timer // closes it after IdleTimeout idle
}

// bufio buffers, taken while bytes move and given back after.
var (
	h1Writers     sync.Pool // *bufio.Writer
	h1Readers     sync.Pool // *bufio.Reader, 2 KiB
	h1PollReaders sync.Pool // *bufio.Reader, 512 bytes
)

func getWriter(w io.Writer) *bufio.Writer {
	if bw, ok := h1Writers.Get().(*bufio.Writer); ok {
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, 4<<10)
}

func putWriter(bw *bufio.Writer) { bw.Reset(nil); h1Writers.Put(bw) }

// getReader lends a reader for an answer; it is held for as long as an
// answer that has begun stays open. 2 KiB: an answer's headers and a
// chunk's size line fit, and a body read into the copy buffer, larger, goes
// past it. A long poll's (poll) is 512 bytes, since a streamed one is open
// for an hour: longer headers are read in parts.
func getReader(r io.Reader, poll bool) *bufio.Reader {
	size := 2 << 10
	if poll {
		size = 512
	}
	if br, ok := readerPool(size).Get().(*bufio.Reader); ok {
		br.Reset(r)
		return br
	}
	return bufio.NewReaderSize(r, size)
}

// readerPool is the pool of readers of size bytes.
func readerPool(size int) *sync.Pool {
	if size < 2<<10 {
		return &h1PollReaders
	}
	return &h1Readers
}

func putReader(br *bufio.Reader) {
	br.Reset(nil)
	readerPool(br.Size()).Put(br)
}

// errServerClosedIdle: a reused connection ended before any byte of the
// answer, as when the server closed it while idle just as the request went
// (get peeks at an idle connection first, which finds the usual case before
// anything is sent). The request goes again on a new connection only when
// its method is idempotent (RFC 9110 9.2.2) and its body can be sent again:
// Exchange may have acted on a POST (SendMail) before the connection broke.
var errServerClosedIdle = errors.New("seg: upstream closed a kept-alive connection")

// RoundTrip sends req over one of the user's connections to its host.
func (u *h1Conns) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		resp, err := u.roundTrip(req)
		if !errors.Is(err, errServerClosedIdle) || attempt > 0 || !idempotent(req.Method) {
			return resp, err
		}
		if req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return nil, err
			}
			body, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			req = req.Clone(req.Context())
			req.Body = body
		}
	}
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodTrace:
		return true
	}
	return false
}

func (u *h1Conns) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	key := req.URL.Scheme + "://" + canonicalAddr(req)
	c, err := u.get(ctx, key, req)
	if err != nil {
		return nil, err
	}
	// The request's end (the device hung up, the header timeout) closes
	// the connection, which ends whatever read or write waits on it.
	stop := context.AfterFunc(ctx, func() { c.conn.Close() })
	fail := func(err error) (*http.Response, error) { return u.fail(ctx, c, stop, err) }
	// A reused connection that broke before any byte of the answer: the
	// caller may send the request again on a new one.
	closedIdle := func(err error) (*http.Response, error) {
		stop()
		u.discard(c)
		return nil, fmt.Errorf("%w: %v", errServerClosedIdle, err)
	}
	// A body in memory is written at once; one that streams from the
	// device is written beside the wait for the answer, which may come
	// first (a refusal), so that neither side waits for the other.
	streamed := req.Body != nil && req.Body != http.NoBody && (req.ContentLength < 0 || req.ContentLength > 64<<10)
	var wrote chan error
	if streamed {
		wrote = make(chan error, 1)
		go func() { wrote <- writeRequest(c.conn, req) }()
	} else if err := writeRequest(c.conn, req); err != nil {
		if c.reused && ctx.Err() == nil {
			return closedIdle(err)
		}
		return fail(err)
	}
	// Wait for the answer's first byte with no buffer held. A long poll
	// that may be parked waits a moment only: an answer that has not
	// begun by then is left on the connection, to be read when the
	// poller says it came (h1Pending).
	hint, _ := ctx.Value(parkHintKey{}).(*parkHint)
	p := &h1Pending{u: u, c: c} // where the first byte is read, parked or not
	if hint != nil && hint.wait > 0 && !streamed {
		if !p.ready(hint.wait) {
			if stop() {
				// Of the request, only what reading the answer needs:
				// its headers and the ticket are not kept for an hour.
				p.req = &http.Request{Method: req.Method, Close: req.Close}
				hint.pending = p
				return nil, errParked
			}
			p.err = ctx.Err() // the request ended as it would have parked
		}
	} else if _, err := io.ReadFull(c.conn, p.first[:]); err != nil {
		p.err = err
	}
	if p.err != nil {
		if c.reused && ctx.Err() == nil && !streamed {
			return closedIdle(p.err)
		}
		return fail(p.err)
	}
	return u.readAnswer(ctx, c, req, p.first[0], stop, wrote, hint)
}

// readAnswer reads the answer whose first byte came: its headers, then a
// body that gives the connection back at its end.
func (u *h1Conns) readAnswer(ctx context.Context, c *h1Conn, req *http.Request, first byte,
	stop func() bool, wrote chan error, hint *parkHint) (*http.Response, error) {
	fail := func(err error) (*http.Response, error) { return u.fail(ctx, c, stop, err) }
	limit := &headerLimit{r: &prefixReader{b: first, r: c.conn}, left: u.pools.maxResponseHeaderBytes()}
	br := getReader(limit, hint != nil)
	var resp *http.Response
	var err error
	for {
		resp, err = http.ReadResponse(br, req)
		if err != nil {
			putReader(br)
			if limit.left <= 0 {
				err = errHeadersTooLong
			}
			return fail(err)
		}
		// Interim answers (100 Continue, 103 Early Hints) are not the answer.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		resp.Body.Close()
	}
	limit.lift()
	if ctx.Err() != nil {
		// The request ended as the answer came: closing the connection
		// sends TLS's close_notify first, and a server quick enough
		// answers the cut-off request before the socket is gone.
		resp.Body.Close()
		putReader(br)
		return fail(ctx.Err())
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		putReader(br)
		resp.Body.Close()
		return fail(errors.New("seg: upstream switched protocols"))
	}
	body := &h1Body{ReadCloser: resp.Body, u: u, c: c, br: br, stop: stop, wrote: wrote,
		reuse: !resp.Close && !req.Close}
	resp.Body = body
	if hint != nil {
		hint.h1 = body
	}
	return resp, nil
}

// fail ends a round trip that failed on c: the connection is closed, and
// the request's end, when it came first, is the error.
func (u *h1Conns) fail(ctx context.Context, c *h1Conn, stop func() bool, err error) (*http.Response, error) {
	stop()
	u.discard(c)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, err
}

// errParked: the answer had not begun within parkHint.wait; it waits on
// the connection in parkHint.pending.
var errParked = errors.New("seg: the answer is awaited by the poller")

// h1Pending is a request sent whose answer has not begun: the connection
// stays the user's and busy, and nothing is held for it but the
// connection.
type h1Pending struct {
	u       *h1Conns
	c       *h1Conn
	req     *http.Request
	first   [1]byte
	have    bool  // first holds the answer's first byte
	err     error // the connection failed before it
	release func()
}

// raw is the upstream socket, for the poller.
func (p *h1Pending) raw() net.Conn { return p.c.raw }

// ready reports whether the answer has begun (or the connection failed),
// waiting at most wait: after the poller's word a byte is there, unless
// what came was part of a TLS record or a message TLS handles itself.
func (p *h1Pending) ready(wait time.Duration) bool {
	if p.have || p.err != nil {
		return true
	}
	p.c.conn.SetReadDeadline(time.Now().Add(wait))
	n, err := p.c.conn.Read(p.first[:])
	p.c.conn.SetReadDeadline(time.Time{})
	switch {
	case n == 1:
		p.have = true
	case isTimeout(err):
		return false
	case err == nil:
		p.err = io.ErrNoProgress
	default:
		p.err = err
	}
	return true
}

// receive reads the answer (waiting for it when it has not begun), under
// ctx as a round trip is.
func (p *h1Pending) receive(ctx context.Context) (*http.Response, error) {
	stop := context.AfterFunc(ctx, func() { p.c.conn.Close() })
	if !p.have && p.err == nil {
		if _, err := io.ReadFull(p.c.conn, p.first[:]); err != nil {
			p.err = err
		}
	}
	if p.err != nil {
		resp, err := p.u.fail(ctx, p.c, stop, p.err)
		p.done()
		return resp, err
	}
	hint, _ := ctx.Value(parkHintKey{}).(*parkHint)
	resp, err := p.u.readAnswer(ctx, p.c, p.req, p.first[0], stop, nil, hint)
	if err != nil {
		p.done()
		return nil, err
	}
	resp.Body = &releaseOnClose{ReadCloser: resp.Body, release: p.done}
	return resp, nil
}

// abandon closes the connection: its answer is not wanted any more.
func (p *h1Pending) abandon() {
	p.u.discard(p.c)
	p.done()
}

func (p *h1Pending) done() {
	if p.release != nil {
		p.release()
		p.release = nil
	}
}

// writeRequest writes req in HTTP/1.1 wire format through a pooled buffer.
func writeRequest(conn net.Conn, req *http.Request) error {
	bw := getWriter(conn)
	err := req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	putWriter(bw)
	return err
}

// errHeadersTooLong: an upstream answer's headers (interim answers'
// included) ran past UserPools.MaxResponseHeaderBytes.
var errHeadersTooLong = errors.New("seg: the upstream answer's headers are longer than MaxResponseHeaderBytes")

// headerLimit bounds what an answer's headers may take from the connection:
// until lifted, reads stop at left bytes (the reader's read-ahead counts
// too, so the bound is approximate by its size).
type headerLimit struct {
	r      io.Reader
	left   int64
	lifted bool
}

func (h *headerLimit) Read(p []byte) (int, error) {
	if h.lifted {
		return h.r.Read(p)
	}
	if h.left <= 0 {
		return 0, errHeadersTooLong
	}
	if int64(len(p)) > h.left {
		p = p[:h.left]
	}
	n, err := h.r.Read(p)
	h.left -= int64(n)
	return n, err
}

// lift ends the bound once the headers are read: the body is unbounded.
func (h *headerLimit) lift() { h.lifted = true }

// prefixReader gives back a byte already read, then reads on.
type prefixReader struct {
	b    byte
	used bool
	r    io.Reader
}

func (p *prefixReader) Read(b []byte) (int, error) {
	if !p.used && len(b) > 0 {
		p.used = true
		b[0] = p.b
		return 1, nil
	}
	return p.r.Read(b)
}

// h1Body is an answer's body: at its end the connection goes back to the
// user's idle connections, when it can carry another request.
type h1Body struct {
	io.ReadCloser
	u     *h1Conns
	c     *h1Conn
	br    *bufio.Reader
	stop  func() bool
	wrote chan error // the streamed body's writer, nil when written at once
	reuse bool
	once  sync.Once
}

func (b *h1Body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.finish(true)
	}
	return n, err
}

// ready reports whether a byte of the body (or its end, or an error) can
// be read, waiting at most wait: a long poll's answer that has begun and
// then waits is parked between its parts.
func (b *h1Body) ready(wait time.Duration) bool {
	if b.br.Buffered() > 0 {
		return true
	}
	b.c.conn.SetReadDeadline(time.Now().Add(wait))
	_, err := b.br.Peek(1) // a timeout is not kept by bufio, nor by TLS
	b.c.conn.SetReadDeadline(time.Time{})
	return !isTimeout(err)
}

func (b *h1Body) Close() error {
	err := b.ReadCloser.Close()
	b.finish(b.ReadCloser == http.NoBody) // an answer without a body is whole
	return err
}

// finish ends the exchange: at the body's end (eof) the connection is kept
// when nothing is left over on it; an answer closed before its end leaves
// the connection in an unknown state, and it is closed.
func (b *h1Body) finish(eof bool) {
	b.once.Do(func() {
		keep := eof && b.reuse && b.br.Buffered() == 0 && !leftover(b.c.conn) && b.stop()
		if b.wrote != nil {
			var err error
			select {
			case err = <-b.wrote:
			default:
				// The answer came whole before the body went: the server
				// does not want the rest, and the connection is spoilt.
				keep = false
				b.c.conn.Close()
				err = <-b.wrote
			}
			if err != nil {
				keep = false
			}
		}
		putReader(b.br)
		if keep {
			b.u.put(b.c)
			return
		}
		b.stop()
		b.u.discard(b.c)
	})
}

// leftover reports whether conn holds bytes after an answer's end that are
// no longer on the socket (where closedByPeer looks) nor in our reader:
// TLS decrypts a whole record, and an upstream that sends a second answer
// in the record of the first would have it taken for the answer to the
// connection's next request, and every later one answered one behind. A
// read with a deadline already past returns what TLS holds at once and
// never waits (TLS keeps no error from a timeout).
func leftover(conn net.Conn) bool {
	if err := conn.SetReadDeadline(time.Now()); err != nil {
		return true
	}
	var b [1]byte
	n, err := conn.Read(b[:])
	conn.SetReadDeadline(time.Time{})
	return n > 0 || !isTimeout(err)
}

// get returns an idle connection to key, or dials one when fewer than
// MaxConnsPerUser are open, or waits for one to be freed.
func (u *h1Conns) get(ctx context.Context, key string, req *http.Request) (*h1Conn, error) {
	for {
		u.mu.Lock()
		if list := u.idle[key]; len(list) > 0 {
			c := list[len(list)-1]
			u.idle[key] = list[:len(list)-1]
			u.mu.Unlock()
			if !c.timer.Stop() {
				continue // its idle timer fired as it was taken: it is being closed
			}
			if closedByPeer(c.raw) {
				u.discard(c) // closed by the server while idle (IIS does after 2 minutes)
				continue
			}
			c.reused = true
			return c, nil
		}
		if u.open[key] < u.pools.maxConnsPerUser() {
			u.open[key]++
			u.mu.Unlock()
			conn, raw, err := u.pools.dial(ctx, req)
			if err != nil {
				u.release(key)
				return nil, err
			}
			return &h1Conn{key: key, conn: conn, raw: raw}, nil
		}
		changed := u.changed
		u.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// put makes c idle, or closes it when the user has enough idle ones.
func (u *h1Conns) put(c *h1Conn) {
	u.mu.Lock()
	if u.closed || len(u.idle[c.key]) >= u.pools.maxIdlePerUser() {
		u.mu.Unlock()
		u.discard(c)
		return
	}
	c.timer = time.AfterFunc(u.pools.idleTimeout(), func() { u.expire(c) })
	u.idle[c.key] = append(u.idle[c.key], c)
	u.wake()
	u.mu.Unlock()
}

// expire closes c after IdleTimeout, unless it was taken meanwhile.
func (u *h1Conns) expire(c *h1Conn) {
	u.mu.Lock()
	list := u.idle[c.key]
	for i, x := range list {
		if x == c {
			u.idle[c.key] = append(list[:i], list[i+1:]...)
			break
		}
	}
	u.mu.Unlock()
	u.discard(c)
}

// discard closes c and frees its place.
func (u *h1Conns) discard(c *h1Conn) {
	c.conn.Close()
	u.release(c.key)
}

func (u *h1Conns) release(key string) {
	u.mu.Lock()
	if u.open[key]--; u.open[key] <= 0 {
		delete(u.open, key)
	}
	u.wake()
	u.mu.Unlock()
}

// wake tells those waiting for a connection to look again. u.mu is held.
func (u *h1Conns) wake() {
	close(u.changed)
	u.changed = make(chan struct{})
}

// CloseIdleConnections closes the idle connections; with drop, the ones in
// use are closed when their answer ends.
func (u *h1Conns) closeIdle(drop bool) {
	u.mu.Lock()
	var idle []*h1Conn
	for k, list := range u.idle {
		for _, c := range list {
			if c.timer.Stop() {
				idle = append(idle, c)
			}
		}
		delete(u.idle, k)
	}
	u.closed = u.closed || drop
	u.mu.Unlock()
	for _, c := range idle {
		u.discard(c)
	}
}

// dial opens a connection to req's host: TCP, then TLS for https, with the
// host's TLS configuration (HTTP/1.1 only). It returns the connection to use
// and the TCP connection under it.
func (p *UserPools) dial(ctx context.Context, req *http.Request) (net.Conn, net.Conn, error) {
	addr := canonicalAddr(req)
	hd := p.hostDials(addr)
	if err := hd.begin(ctx); err != nil {
		return nil, nil, err
	}
	conn, raw, err := p.dialHost(ctx, req, addr)
	hd.end(err, ctx.Err() != nil, p.dialBackoff())
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

// errDialBackoff is the error of a dial refused while its host's back-off
// runs (UserPools.DialBackoff), with the failure that started it.
var errDialBackoff = errors.New("seg: upstream dials paused after failures")

func (p *UserPools) hostDials(addr string) *hostDials {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hosts == nil {
		p.hosts = map[string]*hostDials{}
	}
	hd := p.hosts[addr]
	if hd == nil {
		hd = &hostDials{slots: make(chan struct{}, positiveOr(p.MaxDialsPerHost, 32))}
		p.hosts[addr] = hd
	}
	return hd
}

// begin takes a dial slot, or refuses while the back-off runs. A pause
// that ends within a second is waited out (an Exchange restarted in a
// moment costs its users a short wait, not a 502); a longer one is not.
func (hd *hostDials) begin(ctx context.Context) error {
	hd.mu.Lock()
	if left := time.Until(hd.until); hd.failures > 0 && left > 0 {
		err := hd.last
		hd.mu.Unlock()
		if left > time.Second {
			// A dial error, as the health check and the log expect one.
			return &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("%w: %w", errDialBackoff, err)}
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
		return &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("%w: %w", errDialBackoff, last)}
	}
	return nil
}

// end gives the slot back and records how the dial went; a dial cut by its
// request's end says nothing of the host.
func (hd *hostDials) end(err error, cancelled bool, backoff time.Duration) {
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

func (p *UserPools) dialBackoff() time.Duration {
	return positiveOr(p.DialBackoff, 200*time.Millisecond)
}

// dialHost dials addr: TCP, then TLS for https.
func (p *UserPools) dialHost(ctx context.Context, req *http.Request, addr string) (net.Conn, net.Conn, error) {
	dial := p.DialContext
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
func (p *UserPools) tlsConfig(host string) *tls.Config {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.tlsByHost[host]; ok {
		return c
	}
	var c *tls.Config
	if p.TLSClientConfig != nil {
		c = p.TLSClientConfig.Clone()
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
