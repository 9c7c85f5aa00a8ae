package seg

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Parking held long polls.
//
// A phone holds a Ping (or a Sync with a heartbeat) for up to an hour, and a
// site holds one per phone all day. Held the usual way, a request keeps
// net/http's two goroutines for its connection (the handler's and the
// background read that notices a hang-up), their stacks, the connection's
// buffers and the parsed request: most of a held Ping's memory
// (BENCHMARKS.md). Parked, it keeps its two sockets and little else: the
// device's connection is taken from the server (Hijack), the device's and
// Exchange's sockets are handed to a poller of the handler's own (epoll),
// and no goroutine runs for the request until one of them has something to
// say: Exchange's answer, the device hanging up, the poll's end (a newer
// Ping, LongPollTimeout, the server's shutdown). Then a goroutine reads the
// answer through the same ReverseProxy as any other, writes it on the
// device's connection, and gives the connection back to the http.Server it
// came from (which serves it from a listener of the handler's own, beside
// the caller's), so the device's next request finds it kept alive.
//
// Only what would wait is parked: a request is sent as any other, and one
// whose answer begins within parkAfter (most Syncs, every other command)
// never leaves the server's hands; an answer that has begun and then waits
// (a streamed one) is parked between its parts. Parking needs HTTP/1.1 on
// the device's side, a server that can hijack, the default UserPools
// upstream connections, a request body read whole (ReplayLimit), and
// Linux: without one of them a long poll is held as before.

// parkAfter is how long an answer may take to begin, or a begun answer's
// next part to come, before its request is parked.
const parkAfter = time.Second

// parkHint rides in a parkable long poll's context: the upstream client
// leaves an answer that has not begun in pending, and the answer's body in
// h1, which the handler's pausing body reads.
type parkHint struct {
	wait     time.Duration
	pending  *h1Pending
	h1       *h1Body
	body     *pausingBody
	deadline time.Time // the answer's headers are due (LongPollTimeout)
	timedOut bool      // the poller woke the poll at deadline
	answered func()    // called when the answer's headers came (a held poll stops watching its device)
}

type parkHintKey struct{}

// paused reports whether the answer's body waits for its next part.
func (p *parkHint) paused() bool { return p.body != nil && p.body.paused }

// waiting reports whether the request waits for Exchange.
func (p *parkHint) waiting() bool { return p.pending != nil || p.paused() }

// pausingBody is a parkable answer's body as ReverseProxy copies it: when
// no part comes within wait it ends early (paused), so the copy returns and
// the request can be parked; the poller's word resumes the copy. Close does
// nothing while paused.
type pausingBody struct {
	io.ReadCloser
	h1     *h1Body
	left   int64 // bytes left of a body of known length, -1 when unknown
	wait   time.Duration
	paused bool
}

func (b *pausingBody) Read(p []byte) (int, error) {
	if b.wait > 0 && b.left != 0 && !b.h1.ready(b.wait) {
		b.paused = true
		return 0, io.EOF
	}
	b.paused = false
	n, err := b.ReadCloser.Read(p)
	if b.left > 0 {
		b.left -= int64(n)
	}
	return n, err
}

func (b *pausingBody) Close() error {
	if b.paused {
		return nil
	}
	return b.ReadCloser.Close()
}

// drop closes the body whatever its state: the answer is not wanted. The
// connection is closed first: closing a body before its end reads it to
// its end.
func (b *pausingBody) drop() {
	b.paused = false
	b.h1.c.conn.Close()
	b.ReadCloser.Close()
}

// connWriter writes an HTTP/1.1 answer on a hijacked device connection,
// framed as net/http's server frames it: Content-Length when the answer
// gives one, else chunked. Its buffer is taken while bytes move and given
// back when a parked answer waits. Trailers are not sent (ActiveSync has
// none).
type connWriter struct {
	conn    net.Conn
	bw      *bufio.Writer
	header  http.Header
	head    bool // the request was HEAD
	wrote   bool // the status line and headers went
	noBody  bool
	chunked bool
	left    int64         // of a Content-Length body, -1 when none
	close   bool          // the device's connection ends with this answer
	timeout time.Duration // bounds each write (ProxyHandler.WriteTimeout)
	err     error
}

func (w *connWriter) Header() http.Header {
	if w.header == nil {
		w.header = http.Header{}
	}
	return w.header
}

func (w *connWriter) writer() *bufio.Writer {
	if w.bw == nil {
		w.bw = getWriter(deadlineWriter{w.conn, w.timeout})
	}
	return w.bw
}

// deadlineWriter bounds each write to the device by a deadline
// (ProxyHandler.WriteTimeout) from its start.
type deadlineWriter struct {
	conn    net.Conn
	timeout time.Duration
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	d.conn.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.conn.Write(p)
}

func (w *connWriter) WriteHeader(code int) {
	if w.wrote || code < 200 {
		return // 1xx answers are not passed on
	}
	w.wrote = true
	h := w.Header()
	h.Del("Transfer-Encoding")
	h.Del("Trailer")
	w.left = -1
	if cl := h.Get("Content-Length"); cl != "" {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || n < 0 {
			h.Del("Content-Length")
		} else {
			w.left = n
		}
	}
	w.noBody = w.head || code == http.StatusNoContent || code == http.StatusNotModified
	if !w.noBody && w.left < 0 {
		w.chunked = true
		h.Set("Transfer-Encoding", "chunked")
	}
	if w.close {
		h.Set("Connection", "close")
	} else {
		h.Del("Connection")
	}
	if _, ok := h["Date"]; !ok {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	bw := w.writer()
	fmt.Fprintf(bw, "HTTP/1.1 %03d %s\r\n", code, statusText(code))
	if err := h.Write(bw); err != nil { // sorted; CR and LF in values made spaces
		w.err = err
	}
	bw.WriteString("\r\n")
}

func (w *connWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.noBody {
		return 0, http.ErrBodyNotAllowed
	}
	if len(p) == 0 {
		return 0, nil
	}
	bw := w.writer()
	if w.chunked {
		fmt.Fprintf(bw, "%x\r\n", len(p))
		n, err := bw.Write(p)
		bw.WriteString("\r\n")
		w.err = err
		return n, err
	}
	short := false
	if int64(len(p)) > w.left {
		p, short = p[:w.left], true
	}
	n, err := bw.Write(p)
	w.left -= int64(n)
	if err == nil && short {
		err = http.ErrContentLength
	}
	w.err = err
	return n, err
}

// FlushError sends what is buffered (http.ResponseController's Flush).
func (w *connWriter) FlushError() error {
	if w.bw == nil || w.err != nil {
		return w.err
	}
	w.err = w.bw.Flush()
	return w.err
}

// Flush implements http.Flusher.
func (w *connWriter) Flush() { w.FlushError() }

// idle flushes and gives the buffer back, while the answer waits.
func (w *connWriter) idle() error {
	err := w.FlushError()
	if w.bw != nil {
		putWriter(w.bw)
		w.bw = nil
	}
	return err
}

// end finishes the answer and reports whether it went whole, so that the
// connection can carry the device's next request.
func (w *connWriter) end() bool {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.chunked && w.err == nil {
		_, w.err = w.writer().WriteString("0\r\n\r\n")
	}
	w.idle()
	return w.err == nil && (w.noBody || w.chunked || w.left == 0)
}

// wake says why a parked poll's goroutine runs.
type wake int

const (
	wakeUpstream wake = iota // Exchange's socket has bytes (or closed)
	wakeDevice               // the device's socket has bytes (or closed)
	wakeTimeout              // the answer's headers are past LongPollTimeout
	wakeEnded                // the poll's context ended: a newer Ping, the user's bound, Shutdown's deadline
	wakeShutdown             // the server shuts down: an answer not begun ends, a begun one goes on
)

// errShuttingDown ends the parked long polls of a server that shuts down:
// the device asks again, of another replica.
var errShuttingDown = errors.New("long poll ended: the gateway is shutting down")

// parkedPoll is a long poll whose device connection the handler took from
// the server, from its hijacking to its answer's end.
type parkedPoll struct {
	h      *ProxyHandler
	srv    *http.Server
	conn   net.Conn // the device's, hijacked
	r      *http.Request
	sw     *statusWriter // over cw
	cw     *connWriter
	line   *logLine
	start  time.Time
	hint   *parkHint
	finish func()          // releases the poll's place, ends its context
	ctx    context.Context // the poll's
	cancel context.CancelCauseFunc
	keep   bool               // the connection can go back to the server
	watch  bool               // the device's socket is watched (no stray bytes came)
	id     uint64             // the poller's, while parked
	timer  *time.Timer        // LongPollTimeout while the answer has not begun
	stop   func() bool        // the context's AfterFunc, while parked
	fds    [2]syscall.RawConn // device, upstream: registered with the poller
	// timerAt is the deadline timer was set for: a request sent again
	// (a refused ticket) has a new one.
	timerAt time.Time
	// Held instead of parked: unwatch stops the goroutine that watches
	// the device, which sets gone when it hung up, and sentMore when it
	// sent bytes before its answer.
	unwatch        func()
	gone, sentMore atomic.Bool
	// resting: the answer ended, and the connection waits on the poller
	// for the device's next request (rest).
	resting bool
	// closing: the server shuts down. The goroutine that runs p reads it
	// when it parks p, since a wake that finds p running is lost.
	closing atomic.Bool
}

// parkable reports whether a long poll may be parked: HTTP/1.1 from a
// server that can hand the connection over and take it back, a body that
// was read whole, the default upstream connections, and a poller.
func (h *ProxyHandler) parkable(w http.ResponseWriter, r *http.Request, fw *forward) bool {
	if !pollerSupported || !r.ProtoAtLeast(1, 1) || r.ProtoMajor != 1 || !fw.replay {
		return false
	}
	if _, ok := h.transport.(*UserPools); !ok {
		return false
	}
	if _, ok := w.(http.Hijacker); !ok {
		return false
	}
	srv, _ := r.Context().Value(http.ServerContextKey).(*http.Server)
	return srv != nil
}

// hijack takes the device's connection from the server for a long poll
// whose answer waits (hint.waiting), and parks it. It returns nil when the
// connection could not be taken: the caller then holds the poll as before.
func (h *ProxyHandler) hijack(w http.ResponseWriter, sw *statusWriter, r *http.Request, line *logLine,
	start time.Time, hint *parkHint, cancel context.CancelCauseFunc, finish func()) *parkedPoll {
	if hint.paused() {
		// What the answer has sent goes out before the connection
		// changes hands; the server's buffers are dropped with it.
		if err := http.NewResponseController(w).Flush(); err != nil {
			return nil
		}
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil
	}
	p := &parkedPoll{h: h, conn: conn, r: r, line: line, start: start, hint: hint, finish: finish,
		ctx: r.Context(), cancel: cancel, keep: !r.Close, watch: true}
	p.srv, _ = r.Context().Value(http.ServerContextKey).(*http.Server)
	h.track(p, true)
	if brw.Reader.Buffered() > 0 {
		// The device sent more before its answer (pipelining): those
		// bytes are the server's, lost with its buffers, so the
		// connection ends with this answer.
		p.keep, p.watch = false, false
	}
	p.cw = &connWriter{conn: conn, head: r.Method == http.MethodHead, close: !p.keep, timeout: h.writeTimeout()}
	if hint.paused() {
		// net/http wrote the status and headers: go on in its framing.
		p.cw.wrote = true
		p.cw.left = -1
		if cl, err := strconv.ParseInt(sw.Header().Get("Content-Length"), 10, 64); err == nil && cl >= 0 {
			p.cw.left = cl - sw.written
		}
		p.cw.noBody = p.cw.head || sw.status == http.StatusNoContent || sw.status == http.StatusNotModified
		p.cw.chunked = !p.cw.noBody && p.cw.left < 0
		// The server wrote "Connection: close" if the device asked for it
		// (then keep is false) or the server was shutting down (then the
		// connection given back is closed): the device and the poll agree.
	}
	p.sw = &statusWriter{ResponseWriter: p.cw, status: sw.status, written: sw.written}
	if fw, ok := r.Context().Value(ctxKey{}).(*forward); ok && fw.body0 != nil {
		fw.body0 = nil // the server's body reader, and its buffers, go with the server's half
	}
	line.parked = true
	h.Metrics.parked(1)
	h.park(p)
	return p
}

// park hands p to the poller, or, when that fails, serves it on this
// goroutine.
func (h *ProxyHandler) park(p *parkedPoll) {
	if p.closing.Load() && p.hint.pending != nil {
		go p.resume(wakeShutdown)
		return
	}
	if p.hint.pending != nil && !p.hint.deadline.IsZero() && !p.hint.timedOut {
		// LongPollTimeout: a timer that fired while p ran is found here.
		d := time.Until(p.hint.deadline)
		if d <= 0 {
			go p.resume(wakeTimeout)
			return
		}
		if p.timer == nil || !p.timerAt.Equal(p.hint.deadline) {
			// The first park, or a request sent again (after Exchange
			// refused a ticket: a new deadline for its answer).
			if p.timer != nil {
				p.timer.Stop()
			}
			p.timerAt = p.hint.deadline
			p.timer = time.AfterFunc(d, func() { h.poller.wake(p, wakeTimeout) })
		}
	}
	if err := h.poller.add(p); err != nil {
		h.logger().LogAttrs(context.Background(), slog.LevelWarn, "a long poll could not be parked; held instead",
			slog.String("user", p.line.user), slog.String("error", err.Error()))
		p.holdInstead()
	}
}

// holdInstead serves p on a goroutine of its own that waits for the
// answer, as a poll that cannot be parked waits. LongPollTimeout still
// bounds the wait for the answer's headers (kcdTransport.receive), and a
// goroutine of its own watches the device, so that its hang-up ends the
// poll as the poller would have seen it.
func (p *parkedPoll) holdInstead() {
	p.hint.wait = 0 // nothing pauses now
	if p.hint.body != nil {
		p.hint.body.wait = 0
	}
	if p.watch && p.hint.pending != nil {
		// Until the answer begins: then a hang-up shows in the writes,
		// and bytes the device sends after its answer are its next
		// request's, which a watcher must not take (parkHint.answered).
		p.unwatch = p.watchDevice()
		p.hint.answered = p.stopWatching
	}
	go p.resume(wakeUpstream)
}

// watchDevice waits on a goroutine for the device to hang up or send more
// while p is held, and returns the function that stops it. A hang-up ends
// the poll; bytes (pipelining) are the next request's, read from the
// connection, which therefore closes after this answer.
func (p *parkedPoll) watchDevice() (stop func()) {
	done := make(chan struct{})
	var stopping atomic.Bool
	go func() {
		defer close(done)
		var b [1]byte
		n, err := p.conn.Read(b[:])
		switch {
		case n > 0:
			p.sentMore.Store(true)
		case stopping.Load() && isTimeout(err):
		default:
			p.gone.Store(true)
			p.cancel(context.Canceled)
		}
	}()
	return func() {
		stopping.Store(true)
		p.conn.SetReadDeadline(time.Unix(1, 0))
		<-done
		p.conn.SetReadDeadline(time.Time{})
	}
}

// resume runs when the poller woke p: it moves the answer on as far as it
// can without waiting, then parks p again or ends it.
func (p *parkedPoll) resume(why wake) {
	if p.resting {
		p.wakeRested(why)
		return
	}
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				p.h.logger().LogAttrs(context.Background(), slog.LevelError, "panic serving a parked long poll",
					slog.String("user", p.line.user), slog.Any("panic", v))
			}
			p.cut()
		}
	}()
	switch why {
	case wakeDevice:
		switch p.checkDevice() {
		case deviceQuiet:
			p.h.park(p)
			return
		case deviceGone:
			p.line.deviceGone = true
			p.cut()
			return
		case deviceSent:
			// Watched no more; the answer is still awaited.
			p.keep, p.watch, p.cw.close = false, false, true
			p.h.park(p)
			return
		}
	case wakeTimeout:
		if p.hint.pending != nil && time.Now().Before(p.hint.deadline) {
			// The timer of a deadline since moved (the request was sent
			// again), stopped too late.
			p.h.park(p)
			return
		}
		p.hint.timedOut = true
	case wakeEnded:
		if errors.Is(context.Cause(p.ctx), errShuttingDown) {
			p.keep, p.cw.close = false, true
		}
	case wakeShutdown:
		p.keep, p.cw.close = false, true
		if p.hint.pending == nil {
			// The answer has begun: it goes on, and the connection
			// closes after it (Shutdown waits for it).
			p.h.park(p)
			return
		}
		p.cancel(errShuttingDown) // 503, Retry-After: the device asks another replica
	}
	if p.hint.pending != nil {
		if why == wakeUpstream && p.hint.wait > 0 && !p.hint.pending.ready(p.hint.wait) {
			p.h.park(p)
			return
		}
		// The answer came (or the poll ended): ReverseProxy reads it
		// as it reads any other, through kcdTransport.
		p.h.longPoll.ServeHTTP(p.sw, p.r)
		if p.hint.pending == nil && p.timer != nil {
			p.timer.Stop() // the answer began: LongPollTimeout is over
		}
		if !p.hint.waiting() {
			p.end()
			return
		}
		if p.cw.idle() != nil {
			p.cut()
			return
		}
		p.h.park(p)
		return
	}
	if p.ctx.Err() != nil {
		p.cut() // the answer has begun: nothing else can be said
		return
	}
	buf := p.h.longBuffers.Get()
	err := copyRest(p.sw, p.hint.body, buf, p.cw.FlushError)
	p.h.longBuffers.Put(buf)
	switch {
	case err != nil:
		p.cut()
	case p.hint.body.paused:
		if p.cw.idle() != nil {
			p.cut()
			return
		}
		p.h.park(p)
	default:
		p.hint.body.Close()
		p.hint.body = nil
		p.end()
	}
}

// copyRest copies what comes of an answer's body to w, flushing each part
// of a streamed one as ReverseProxy does; it returns when the body ends or
// pauses again.
func copyRest(w *statusWriter, b *pausingBody, buf []byte, flush func() error) error {
	for {
		n, err := b.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if b.left < 0 {
				if ferr := flush(); ferr != nil {
					return ferr
				}
			}
		}
		if b.paused || err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// hold finishes on the handler's goroutine a long poll that waits but could
// not be parked, as every poll was held before parking. An error means the
// answer had begun and was cut.
func (h *ProxyHandler) hold(sw *statusWriter, r *http.Request, hint *parkHint) error {
	hint.wait = 0
	if hint.pending != nil {
		h.longPoll.ServeHTTP(sw, r)
		return nil
	}
	body := hint.body
	body.wait = 0
	buf := h.longBuffers.Get()
	defer h.longBuffers.Put(buf)
	err := copyRest(sw, body, buf, http.NewResponseController(sw).Flush)
	if err != nil {
		body.drop()
		return err
	}
	return body.Close()
}

type deviceState int

const (
	deviceQuiet deviceState = iota // nothing to read after all (part of a TLS record)
	deviceGone                     // closed, reset, or TLS close_notify
	deviceSent                     // bytes before the answer: pipelining
)

// checkDevice reads what woke the poller on the device's socket, waiting a
// moment for the rest of a TLS record.
func (p *parkedPoll) checkDevice() deviceState {
	var b [1]byte
	p.conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := p.conn.Read(b[:])
	p.conn.SetReadDeadline(time.Time{})
	switch {
	case n > 0:
		return deviceSent
	case isTimeout(err):
		return deviceQuiet
	}
	return deviceGone
}

// end finishes a poll whose answer went: the connection goes back to the
// server when it can carry another request (see rest).
func (p *parkedPoll) end() {
	p.stopWatching()
	whole := p.cw.end()
	p.done()
	p.conn.SetWriteDeadline(time.Time{}) // the server's from here on
	if whole && p.keep && !p.sentMore.Load() {
		p.h.rest(p.srv, p.conn)
		return
	}
	p.conn.Close()
}

// stopWatching stops the goroutine that watches a held poll's device.
func (p *parkedPoll) stopWatching() {
	if p.unwatch != nil {
		p.unwatch()
		p.unwatch = nil
	}
	if p.gone.Load() {
		p.line.deviceGone = true
	}
}

// cut ends a poll that cannot be answered: the device went, its
// connection failed, or the poll ended after its answer had begun.
func (p *parkedPoll) cut() {
	p.cancel(context.Canceled) // a no-op when the poll ended already
	p.stopWatching()
	if pend := p.hint.pending; pend != nil {
		p.hint.pending = nil
		pend.abandon()
	}
	if body := p.hint.body; body != nil {
		p.hint.body = nil
		body.drop()
	}
	p.cw.idle()
	p.conn.Close()
	p.done()
}

// done logs the request and frees its place.
func (p *parkedPoll) done() {
	if p.timer != nil {
		p.timer.Stop()
	}
	p.h.track(p, false)
	p.h.Metrics.parked(-1)
	p.h.log(p.r, p.sw, p.line, p.start)
	p.finish()
}

// track adds p to the polls taken from their servers, or removes it.
func (h *ProxyHandler) track(p *parkedPoll, add bool) {
	h.parkMu.Lock()
	defer h.parkMu.Unlock()
	if add {
		if h.live == nil {
			h.live = map[*parkedPoll]struct{}{}
		}
		if len(h.live) == 0 {
			h.liveGone = make(chan struct{})
		}
		h.live[p] = struct{}{}
		if h.closing {
			p.closing.Store(true)
		}
		return
	}
	delete(h.live, p)
	if len(h.live) == 0 && h.liveGone != nil {
		close(h.liveGone)
		h.liveGone = nil
	}
}

// endAll tells every poll taken from srv (nil: from any server) that it
// shuts down.
func (h *ProxyHandler) endAll(srv *http.Server) {
	h.parkMu.Lock()
	var list []*parkedPoll
	for p := range h.live {
		if srv == nil || p.srv == srv {
			list = append(list, p)
		}
	}
	h.parkMu.Unlock()
	for _, p := range list {
		p.closing.Store(true)
		h.poller.wake(p, wakeShutdown)
	}
}

// Shutdown ends the long polls the handler took from their servers
// (parked, see ProxyHandler), which http.Server.Shutdown knows nothing of:
// one whose answer has not begun gets 503 with Retry-After and
// "Connection: close" (http.Server.Shutdown does that much itself), and one
// whose answer has begun is waited for, its connection closed after it.
// When ctx ends first, the polls left are cut, and ctx's error returned.
// Call it after http.Server.Shutdown, within the same deadline. Requests
// that come after it are served as before.
func (h *ProxyHandler) Shutdown(ctx context.Context) error {
	h.parkMu.Lock()
	h.closing = true
	h.parkMu.Unlock()
	defer func() {
		h.parkMu.Lock()
		h.closing = false
		h.parkMu.Unlock()
	}()
	h.endAll(nil)
	for {
		h.parkMu.Lock()
		gone := h.liveGone
		h.parkMu.Unlock()
		if gone == nil {
			return nil
		}
		select {
		case <-gone:
		case <-ctx.Done():
			h.parkMu.Lock()
			for p := range h.live {
				p.cancel(errShuttingDown)
			}
			h.parkMu.Unlock()
			return ctx.Err()
		}
	}
}

// serving makes ready what srv needs once the handler may take a
// connection from it: a listener on which it serves the connections given
// back, and, at its Shutdown, the end of the polls not begun that it gave
// (http.Server.Shutdown does not know hijacked connections).
func (h *ProxyHandler) serving(srv *http.Server) *giveBackListener {
	h.serversMu.Lock()
	defer h.serversMu.Unlock()
	if l := h.servers[srv]; l != nil {
		return l
	}
	if h.servers == nil {
		h.servers = map[*http.Server]*giveBackListener{}
	}
	l := &giveBackListener{conns: make(chan net.Conn, 64), done: make(chan struct{})}
	h.servers[srv] = l
	srv.RegisterOnShutdown(func() {
		l.Close()
		h.endAll(srv)
	})
	go func() {
		srv.Serve(l) // returns at the server's Shutdown or Close
		l.Close()
	}()
	return l
}

// rest keeps a device connection whose long poll's answer ended on the
// poller until the device begins its next request, then gives it back to
// srv. http.Server gives a kept-alive connection IdleTimeout (or
// ReadTimeout) to begin its next request, and ReadHeaderTimeout from its
// first byte; a connection given back at once would be a new connection to
// it, with ReadHeaderTimeout from the start: a device that waited longer
// than that after a Ping's answer had its connection cut, where one that
// ran any other command kept it for IdleTimeout. Resting, it has the same
// rules as any other, and costs no goroutine until the device sends.
func (h *ProxyHandler) rest(srv *http.Server, conn net.Conn) {
	idle := srv.IdleTimeout
	if idle <= 0 {
		idle = srv.ReadTimeout
	}
	q := &parkedPoll{h: h, srv: srv, conn: conn, ctx: context.Background(), watch: true, resting: true,
		cancel: func(error) {}} // Shutdown's deadline cancels every live poll: nothing to cancel here
	if idle > 0 {
		q.timerAt = time.Now().Add(idle)
		q.timer = time.AfterFunc(idle, func() { h.poller.wake(q, wakeTimeout) })
	}
	h.track(q, true)
	if q.closing.Load() {
		q.wakeRested(wakeShutdown)
		return
	}
	if err := h.poller.add(q); err != nil {
		q.wakeRested(wakeDevice) // given back at once, as before
		return
	}
	switch {
	case q.closing.Load():
		h.poller.wake(q, wakeShutdown) // the shutdown's wake came before q was parked
	case !q.timerAt.IsZero() && !time.Now().Before(q.timerAt):
		h.poller.wake(q, wakeTimeout) // the timer fired before q was parked
	}
}

// wakeRested ends a resting connection's rest: the device began its next
// request (given back to the server), or IdleTimeout passed or the server
// shuts down (closed).
func (p *parkedPoll) wakeRested(why wake) {
	if p.timer != nil {
		p.timer.Stop()
	}
	p.h.track(p, false)
	if why == wakeDevice && !p.closing.Load() {
		p.h.giveBack(p.srv, p.conn)
		return
	}
	p.conn.Close()
}

// giveBack hands a device connection whose answer ended back to srv, which
// reads the device's next request from it as from any connection.
func (h *ProxyHandler) giveBack(srv *http.Server, conn net.Conn) {
	h.serving(srv).give(conn)
}

// giveBackListener is the listener on which a server serves the connections
// its parked long polls gave back.
type giveBackListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *giveBackListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *giveBackListener) Close() error {
	l.once.Do(func() { close(l.done) })
	l.drain()
	return nil
}

// give hands conn to the server's Accept, or closes it once the listener
// is closed. A connection that went in as the listener closed (select
// picks at random when both are ready) is closed by the drain after it:
// no Accept will take it.
func (l *giveBackListener) give(conn net.Conn) {
	select {
	case l.conns <- conn:
		select {
		case <-l.done:
			l.drain()
		default:
		}
	case <-l.done:
		conn.Close()
	}
}

// drain closes the connections given back that no Accept took.
func (l *giveBackListener) drain() {
	for {
		select {
		case c := <-l.conns:
			c.Close()
		default:
			return
		}
	}
}

func (l *giveBackListener) Addr() net.Addr { return givenBackAddr{} }

// givenBackAddr names the listener of given-back connections (each
// connection has its own addresses).
type givenBackAddr struct{}

func (givenBackAddr) Network() string { return "tcp" }
func (givenBackAddr) String() string  { return "seg: connections given back by parked long polls" }

// rawConn is the socket under a connection (TLS or not) for the poller.
func rawConn(c net.Conn) (syscall.RawConn, error) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("seg: a %T has no socket to poll", c)
	}
	return sc.SyscallConn()
}
