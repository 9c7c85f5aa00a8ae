package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// conns are one user's connections to the upstreams.
type conns struct {
	pools *Pools
	user  string // whose connections these are

	mu      sync.Mutex
	idle    map[string][]*conn // by scheme://host:port, most recent last
	open    map[string]int     // connections per host, idle or busy
	changed chan struct{}      // closed and replaced when a connection is freed
	closed  bool               // the pool was evicted: no connection goes idle
}

// conn is one upstream connection.
type conn struct {
	key    string
	conn   net.Conn // TLS over raw, or raw
	raw    net.Conn
	reused bool        // carried a request before
	timer  *time.Timer // closes it after IdleTimeout idle
}

func newConns(p *Pools, user string) *conns {
	return &conns{pools: p, user: user, idle: map[string][]*conn{}, open: map[string]int{}, changed: make(chan struct{})}
}

// roundTrip sends req and reads its answer, sending it once more on a new
// connection when a kept-alive one turns out closed and the request may go
// again (errServerClosedIdle).
func (u *conns) roundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		resp, err := u.roundTripOnce(req)
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

func (u *conns) roundTripOnce(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	c, err := u.get(ctx, req)
	if err != nil {
		return nil, err
	}
	// The request's end (the device hung up, the header timeout) closes
	// the connection, which ends whatever read or write waits on it.
	stop := context.AfterFunc(ctx, func() { c.conn.Close() })
	fail := func(err error) (*http.Response, error) { return nil, u.fail(ctx, c, stop, err) }
	// A reused connection that broke before any byte of the answer: the
	// caller may send the request again on a new one.
	closedIdle := func(err error) (*http.Response, error) {
		stop()
		u.close(c)
		return nil, fmt.Errorf("%w: %v", errServerClosedIdle, err)
	}
	// A body in memory is written at once; one that streams from the
	// device is written beside the wait for the answer, which may come
	// first (a refusal), so that neither side waits for the other.
	if err := u.authorize(c, req); err != nil {
		stop()
		u.close(c)
		return nil, err
	}
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
	// Wait for the answer's first byte with no buffer held.
	var first [1]byte
	if _, err := io.ReadFull(c.conn, first[:]); err != nil {
		if c.reused && ctx.Err() == nil && !streamed {
			return closedIdle(err)
		}
		return fail(err)
	}
	return u.readAnswer(ctx, c, req, first[0], stop, wrote, answerBuffer)
}

// send writes req on a connection and returns the exchange that awaits
// its answer.
func (u *conns) send(req *http.Request) (*Exchange, error) {
	ctx := req.Context()
	c, err := u.get(ctx, req)
	if err != nil {
		return nil, err
	}
	if err := u.authorize(c, req); err != nil {
		u.close(c)
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.conn.Close() })
	err = writeRequest(c.conn, req)
	if !stop() && err == nil {
		err = ctx.Err() // the connection was closed under the write's end
	}
	if err != nil {
		return nil, u.fail(ctx, c, func() bool { return false }, err)
	}
	return &Exchange{u: u, c: c, req: &http.Request{Method: req.Method, Close: req.Close}}, nil
}

// fail ends a round trip that failed on c: the connection is closed, and
// the request's end, when it came first, is the error.
func (u *conns) fail(ctx context.Context, c *conn, stop func() bool, err error) error {
	stop()
	u.close(c)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// readAnswer reads the answer whose first byte came: its headers, then a
// body that gives the connection back at its end. ctx's end, through stop,
// closes the connection until the body is done with.
func (u *conns) readAnswer(ctx context.Context, c *conn, req *http.Request, first byte,
	stop func() bool, wrote chan error, bufSize int) (*http.Response, error) {
	limit := &headerLimit{r: &prefixReader{b: first, r: c.conn}, left: u.pools.cfg.MaxResponseHeaderBytes}
	br := getReader(limit, bufSize)
	var resp *http.Response
	var err error
	for {
		resp, err = http.ReadResponse(br, req)
		if err != nil {
			putReader(br)
			if limit.left <= 0 {
				err = ErrHeadersTooLong
			}
			return nil, u.fail(ctx, c, stop, err)
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
		return nil, u.fail(ctx, c, stop, ctx.Err())
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		putReader(br)
		resp.Body.Close()
		return nil, u.fail(ctx, c, stop, ErrSwitchedProtocols)
	}
	resp.Body = &body{ReadCloser: resp.Body, u: u, c: c, br: br, stop: stop, wrote: wrote,
		reuse: !resp.Close && !req.Close, chunked: len(resp.TransferEncoding) > 0}
	return resp, nil
}

// writeRequest writes req in HTTP/1.1 wire format through a pooled buffer.
// authorize sets req's Authorization header for c, when Config.Authorize
// is set.
func (u *conns) authorize(c *conn, req *http.Request) error {
	if u.pools.cfg.Authorize == nil {
		return nil
	}
	var cs *tls.ConnectionState
	if tc, ok := c.conn.(*tls.Conn); ok {
		st := tc.ConnectionState()
		cs = &st
	}
	v, err := u.pools.cfg.Authorize(u.user, req, cs)
	if err != nil {
		return err
	}
	if v != "" {
		req.Header.Set("Authorization", v)
	}
	return nil
}

func writeRequest(conn net.Conn, req *http.Request) error {
	bw := getWriter(conn)
	err := req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	putWriter(bw)
	return err
}

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
		return 0, ErrHeadersTooLong
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

// body is an answer's body: at its end the connection goes back to the
// user's idle connections, when it can carry another request.
type body struct {
	io.ReadCloser
	u     *conns
	c     *conn
	br    *bufio.Reader
	stop  func() bool
	wrote chan error // the streamed body's writer, nil when written at once
	reuse bool
	// chunked: a chunk's CRLF left buffered is no byte of the body (see
	// await).
	chunked bool
	once    sync.Once
	done    bool // finished: br is given back
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.finish(true)
	}
	return n, err
}

// await reports whether a byte of the body (or its end, or an error) can
// be read, waiting until at most. A chunked body's buffered bytes that are
// only (part of) the CRLF after a chunk do not count: net/http's chunked
// reader, given them, goes on to the next chunk's size line and waits
// there, without a deadline, for a chunk that may come an hour later.
func (b *body) await(until time.Time) bool {
	if b.done {
		return true
	}
	for {
		n := b.br.Buffered()
		if n > 0 && !(b.chunked && onlyCRLF(b.br, n)) {
			return true
		}
		b.c.conn.SetReadDeadline(until)
		_, err := b.br.Peek(n + 1) // a timeout is not kept by bufio, nor by TLS
		b.c.conn.SetReadDeadline(time.Time{})
		if err != nil {
			return !isTimeout(err) // an end or an error is for Read to say
		}
	}
}

// onlyCRLF reports whether the n buffered bytes are "\r", or "\r\n".
func onlyCRLF(br *bufio.Reader, n int) bool {
	if n > 2 {
		return false
	}
	p, _ := br.Peek(n)
	return string(p) == "\r\n"[:n]
}

func (b *body) Close() error {
	if !b.done && b.ReadCloser != http.NoBody {
		// net/http's Close reads a body to its end, which an upstream
		// that stops sending never gives: the connection, which cannot
		// carry another request anyway, goes first.
		b.c.conn.Close()
	}
	err := b.ReadCloser.Close()
	b.finish(b.ReadCloser == http.NoBody) // an answer without a body is whole
	return err
}

// finish ends the exchange: at the body's end (eof) the connection is kept
// when nothing is left over on it; an answer closed before its end leaves
// the connection in an unknown state, and it is closed.
func (b *body) finish(eof bool) {
	b.once.Do(func() {
		b.done = true
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
		b.u.close(b.c)
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

// get returns an idle connection to req's host, or dials one when fewer
// than MaxConnsPerUser are open, or waits for one to be freed.
func (u *conns) get(ctx context.Context, req *http.Request) (*conn, error) {
	key := req.URL.Scheme + "://" + canonicalAddr(req)
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
				u.close(c) // closed by the server while idle (IIS does after 2 minutes)
				continue
			}
			c.reused = true
			return c, nil
		}
		if u.open[key] < u.pools.cfg.MaxConnsPerUser {
			u.open[key]++
			u.mu.Unlock()
			tc, raw, err := u.pools.dial(ctx, req)
			if err != nil {
				u.release(key)
				return nil, err
			}
			return &conn{key: key, conn: tc, raw: raw}, nil
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
func (u *conns) put(c *conn) {
	u.mu.Lock()
	if u.closed || len(u.idle[c.key]) >= u.pools.cfg.MaxIdlePerUser {
		u.mu.Unlock()
		u.close(c)
		return
	}
	c.timer = time.AfterFunc(u.pools.cfg.IdleTimeout, func() { u.expire(c) })
	u.idle[c.key] = append(u.idle[c.key], c)
	u.changedNow()
	u.mu.Unlock()
}

// expire closes c after IdleTimeout, unless it was taken meanwhile.
func (u *conns) expire(c *conn) {
	u.mu.Lock()
	list := u.idle[c.key]
	for i, x := range list {
		if x == c {
			u.idle[c.key] = append(list[:i], list[i+1:]...)
			break
		}
	}
	u.mu.Unlock()
	u.close(c)
}

// close closes c and frees its place.
func (u *conns) close(c *conn) {
	c.conn.Close()
	u.release(c.key)
}

// release frees a place of key's.
func (u *conns) release(key string) {
	u.mu.Lock()
	if u.open[key]--; u.open[key] <= 0 {
		delete(u.open, key)
	}
	u.changedNow()
	u.mu.Unlock()
}

// changedNow tells those waiting for a connection to look again. u.mu is
// held.
func (u *conns) changedNow() {
	close(u.changed)
	u.changed = make(chan struct{})
}

// closeIdle closes the idle connections; with evicted, the ones in use are
// closed when their answer ends.
func (u *conns) closeIdle(evicted bool) {
	u.mu.Lock()
	var idle []*conn
	for k, list := range u.idle {
		for _, c := range list {
			if c.timer.Stop() {
				idle = append(idle, c)
			}
		}
		delete(u.idle, k)
	}
	u.closed = u.closed || evicted
	u.mu.Unlock()
	for _, c := range idle {
		u.close(c)
	}
}
