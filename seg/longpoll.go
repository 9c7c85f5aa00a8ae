package seg

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segkcd/segkcd/seg/internal/h1"
	"github.com/segkcd/segkcd/seg/internal/park"
)

// Long polls.
//
// A phone holds a Ping (or a Sync with a heartbeat) for up to an hour, and a
// site holds one per phone all day. Held the usual way, a request keeps
// net/http's two goroutines for its connection (the handler's and the
// background read that notices a hang-up), their stacks, the connection's
// buffers and the parsed request: most of a held Ping's memory
// (BENCHMARKS.md). Parked, it keeps its two sockets and little else.
//
// One longPoll owns a Ping or Sync from its sending to its end:
//
//  1. send: the request goes to Exchange over the user's connections
//     (h1.Pools.Send), on the handler's goroutine.
//  2. advance: the answer is read and copied to the device as it comes, as
//     long as each part comes within parkAfter.
//  3. When Exchange keeps it waiting, the device's connection is taken
//     from the server (Hijack) and both sockets go to the poller
//     (park.Poller.Watch): no goroutine runs for the poll until Exchange
//     or the device has something to say, or LongPollTimeout passes. The
//     handler returns.
//  4. resume: the poller's wake runs on a goroutine of its own, which
//     advances the answer again, and parks it again or ends it.
//  5. end: the one exit. The answer goes whole (the connection rests on
//     the poller until the device's next request, then goes back to its
//     server), or is cut (the connection closes).
//
// A poll that cannot be parked (HTTP/2, a listener whose connections hide
// their sockets, another UserTransport, a body that streams, not Linux) is
// held: it waits on a goroutine for as long as it takes, through the same
// steps. Only a poll over UserPools with a body read whole is a longPoll;
// the others go through ReverseProxy as every other request does.

// parkAfter is how long an answer may take to begin, or a begun answer's
// next part to come, before its poll is parked.
const parkAfter = time.Second

// errShuttingDown ends the parked long polls of a server that shuts down:
// the device asks again, of another replica.
var errShuttingDown = errors.New("long poll ended: the gateway is shutting down")

// wake says why a parked poll's goroutine runs.
type wake int

const (
	wakeUpstream wake = iota // Exchange's socket has bytes (or closed)
	wakeDevice               // the device's socket has bytes (or closed)
	wakeDeadline             // the answer's headers are past LongPollTimeout
	wakeEnded                // the poll's context ended: a newer Ping, the user's bound, Shutdown's deadline
	wakeFailed               // the poller failed: the poll is held instead
	wakeShutdown             // the server shuts down: an answer not begun ends, a begun one goes on
)

func wakeFor(r park.Reason) wake {
	switch r {
	case park.Device:
		return wakeDevice
	case park.Deadline:
		return wakeDeadline
	case park.Ended:
		return wakeEnded
	case park.Failed:
		return wakeFailed
	}
	return wakeUpstream
}

// longPoll is one Ping or Sync over UserPools, from its sending to its end.
// One goroutine at a time runs it: the handler's, then the one each wake
// runs on.
type longPoll struct {
	h      *ProxyHandler
	pools  *h1.Pools
	r      *http.Request // the device's, in the poll's context (fw.ctx)
	fw     *forward
	line   *logLine
	start  time.Time
	ctx    context.Context // ended by a newer Ping, MaxLongPollsPerUser, Shutdown
	cancel context.CancelCauseFunc
	finish func() // releases the poll's place and ends its context

	ex       *h1.Exchange
	until    time.Time      // the answer's headers are due: LongPollTimeout from the last send
	retried  bool           // sent again after Exchange refused a ticket
	resp     *http.Response // the answer, once begun
	pausable bool           // its body can be awaited between parts (ModifyResponse did not replace it)
	left     int64          // bytes left of a body of known length, -1 when unknown
	held     bool           // waits for Exchange on its goroutine, as long as it takes

	sw *statusWriter // the answer's writer: over the server's, then over pw

	// Once taken from the server:
	srv      *http.Server
	conn     net.Conn // the device's
	pw       *park.Writer
	keep     bool        // the connection can go back to the server
	watched  bool        // the device's socket is watched (no stray bytes came from it)
	unwatch  func()      // a held poll's device watcher (park.WatchHeld)
	gone     atomic.Bool // the device hung up while held
	sentMore atomic.Bool // the device sent bytes before its answer's end: they are lost

	// heldTaken: taken from the server, then held (not parkable);
	// begun: the answer's head went. Shutdown reads them from its own
	// goroutine.
	heldTaken, begun atomic.Bool

	mu        sync.Mutex
	watch     *park.Watch // while parked
	closing   bool        // the server shuts down
	closeSeen bool        // the poll acted on closing
}

// serveLongPoll serves a long poll on the handler's goroutine, and reports
// whether it took the device's connection from the server: then the poll
// logs and ends itself.
func (h *ProxyHandler) serveLongPoll(w http.ResponseWriter, sw *statusWriter, r *http.Request, line *logLine,
	start time.Time, fw *forward, params Params) (taken bool) {
	h.Metrics.longPoll(1)
	// The poll's context outlives the handler when the poll is parked;
	// until then the device's hang-up (the server's context) ends it.
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(r.Context()))
	link := func() (unlink func() bool) {
		return context.AfterFunc(r.Context(), func() { cancel(context.Cause(r.Context())) })
	}
	unlink := link()
	device := ""
	if params.Cmd == "Ping" {
		device = params.DeviceID // a device holds one Ping; its Syncs may overlap
	}
	held := h.polls.hold(fw.sid, device, h.maxLongPolls(), cancel)
	line.poll = ctx
	finish := func() {
		h.polls.release(fw.sid, held)
		cancel(nil)
		h.Metrics.longPoll(-1)
	}
	var lp *longPoll
	defer func() { // also when a cut answer aborts the handler (panic)
		if !taken {
			if lp != nil && lp.ex != nil {
				lp.ex.Close() // a panic (an ErrorHandler's) past end
			}
			unlink()
			finish()
		}
	}()
	fw.ctx = context.WithValue(ctx, ctxKey{}, fw)
	pr := r.WithContext(fw.ctx)
	pools, ok := h.transport.(*UserPools)
	if !ok || !fw.replay {
		// Another transport, or a body that streams (it cannot be sent
		// again): ReverseProxy holds it, as any other request.
		h.longPoll.ServeHTTP(sw, pr)
		return false
	}
	lp = &longPoll{h: h, pools: pools.h1(), r: pr, fw: fw, line: line, start: start, ctx: ctx, cancel: cancel,
		finish: finish, sw: sw}
	srv := lp.takeable(w)
	if srv != nil {
		h.serving(srv) // its Shutdown hook, before a poll is taken from it
	}
	if !lp.send() || !lp.advance() {
		return false
	}
	// Exchange keeps it waiting.
	if srv != nil && unlink() {
		if lp.take(w, srv) {
			lp.park()
			return true
		}
		unlink = link()
	}
	// Held here, as a poll that cannot be parked is. An answer cut after
	// it began aborts the handler: the device must see it cut, not ended.
	lp.held = true
	lp.advance()
	return false
}

// send sends the request to Exchange (again, after a refused ticket) with a
// fresh Negotiate header; LongPollTimeout for the answer's headers starts
// now. It reports false when the poll ended.
func (lp *longPoll) send() bool {
	lp.until = time.Now().Add(lp.fw.timeout)
	out, err := lp.h.outboundRequest(lp.r, lp.fw)
	if err != nil {
		lp.fail(err)
		return false
	}
	// fw.ctx is lp.ctx with the forward, which the pools' Authorize reads
	// to make the header on the connection.
	ctx, cancel := context.WithDeadline(lp.fw.ctx, lp.until)
	ex, err := lp.pools.Send(lp.fw.sid, out.WithContext(ctx))
	cancel()
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			lp.fw.upstream.setHealth(err) // skipped for new users until a probe succeeds
		}
		if errors.Is(err, context.DeadlineExceeded) && lp.ctx.Err() == nil {
			err = errUpstreamTime
		}
		lp.fail(err)
		return false
	}
	lp.ex = ex
	return true
}

// advance moves the answer on as far as it goes without waiting more than
// parkAfter for Exchange (a held poll waits as long as it takes), and
// reports whether the poll waits; one that does not has ended.
func (lp *longPoll) advance() (waits bool) {
	for lp.resp == nil {
		if !lp.held && !lp.ex.Await(earlier(time.Now().Add(parkAfter), lp.until)) {
			return true
		}
		if !lp.answer() {
			return false
		}
	}
	buf := lp.h.longBuffers.Get()
	defer lp.h.longBuffers.Put(buf)
	for {
		if lp.pausable && !lp.held && lp.left != 0 && !lp.ex.Await(time.Now().Add(parkAfter)) {
			return true
		}
		n, err := lp.resp.Body.Read(buf)
		if n > 0 {
			if lp.left > 0 {
				lp.left -= int64(n)
			}
			if lp.left == 0 {
				// The device has its answer with this part, and may send
				// its next request at once: a held poll's watcher must
				// not read it.
				lp.stopWatchingDevice()
			}
			if _, werr := lp.sw.Write(buf[:n]); werr != nil {
				lp.end(true)
				return false
			}
			// A streamed answer goes part by part, as ReverseProxy
			// flushes one of unknown length.
			if lp.resp.ContentLength < 0 && lp.flush() != nil {
				lp.end(true)
				return false
			}
		}
		switch {
		case err == io.EOF:
			lp.trailers()
			lp.end(false)
			return false
		case err != nil:
			lp.end(true)
			return false
		}
	}
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// answer reads the answer's head and passes it to the device; or sends the
// request again once when Exchange refused the ticket; or answers the
// failure. It reports false when the poll ended.
func (lp *longPoll) answer() bool {
	resp, err := lp.ex.Answer(lp.ctx, lp.until)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = errUpstreamTime
		}
		lp.fail(err)
		return false
	}
	lp.h.debugf(lp.line, "upstream answered", slog.Bool("parked", lp.conn != nil), slog.Int("status", resp.StatusCode))
	if resp.StatusCode == http.StatusUnauthorized {
		// Exchange refused the ticket: the ASA's key changed since it was
		// issued (a roll), or the ticket was revoked.
		drain(resp)
		lp.ex.Close()
		lp.ex = nil
		if err := lp.h.renewTicket(lp.ctx, lp.fw, lp.retried); err != nil {
			lp.fail(err)
			return false
		}
		lp.retried = true
		return lp.send()
	}
	resp.Request = lp.r // for ModifyResponse: this request's context
	removeHopByHop(resp.Header)
	body := resp.Body
	if err := lp.h.modifyResponse(resp); err != nil {
		lp.ex.Close()
		if resp.Body != body {
			resp.Body.Close()
		}
		lp.fail(err)
		return false
	}
	// A hook that reads the body itself would take an early end for the
	// answer's end: that body is read on, never awaited.
	lp.resp, lp.pausable, lp.left = resp, resp.Body == body, resp.ContentLength
	dst := lp.sw.Header()
	for k, vv := range resp.Header {
		for _, v := range vv {
			dst.Add(k, v)
		}
	}
	for k := range resp.Trailer {
		dst.Add("Trailer", k)
	}
	if lp.pw != nil && lp.sentMore.Load() {
		// The device sent more than its request: the connection ends
		// with this answer, and the device is told so.
		lp.keep, lp.pw.Close = false, true
	}
	lp.begun.Store(true)
	lp.sw.WriteHeader(resp.StatusCode)
	return true
}

// trailers passes on the answer's trailers, when the server's writer
// carries it (a parked one's does not: ActiveSync has none).
func (lp *longPoll) trailers() {
	if lp.pw != nil {
		return
	}
	for k, vv := range lp.resp.Trailer {
		for _, v := range vv {
			lp.sw.Header().Add(http.TrailerPrefix+k, v)
		}
	}
}

func (lp *longPoll) flush() error {
	if lp.pw != nil {
		return lp.pw.FlushError()
	}
	lp.sw.Flush()
	return nil
}

// fail answers a failure before the answer began (ProxyHandler.proxyError)
// and ends the poll.
func (lp *longPoll) fail(err error) {
	lp.h.proxyError(lp.sw, lp.r, err)
	lp.end(false)
}

// takeable returns the server a long poll may be taken from: HTTP/1.1 from
// a server that can hand the connection over and take it back, and a
// poller; nil when it cannot be.
func (lp *longPoll) takeable(w http.ResponseWriter) *http.Server {
	if !pollerSupported || lp.r.ProtoMajor != 1 || !lp.r.ProtoAtLeast(1, 1) {
		return nil
	}
	if _, ok := w.(http.Hijacker); !ok {
		return nil
	}
	srv, _ := lp.r.Context().Value(http.ServerContextKey).(*http.Server)
	return srv
}

// take takes the device's connection from srv (Hijack), and reports
// whether it could.
func (lp *longPoll) take(w http.ResponseWriter, srv *http.Server) bool {
	rc := http.NewResponseController(w)
	if lp.resp != nil {
		// What the answer has sent goes out before the connection
		// changes hands; the server's buffers are dropped with it.
		if rc.Flush() != nil {
			return false
		}
	}
	conn, brw, err := rc.Hijack()
	if err != nil {
		return false
	}
	lp.srv, lp.conn, lp.keep, lp.watched = srv, conn, !lp.r.Close, true
	if brw.Reader.Buffered() > 0 {
		// The device sent more before its answer (pipelining): those
		// bytes are the server's, lost with its buffers, so the
		// connection ends with this answer.
		lp.keep, lp.watched = false, false
		lp.sentMore.Store(true)
	}
	lp.pw = &park.Writer{Conn: conn, Timeout: lp.h.writeTimeout(), Head: lp.r.Method == http.MethodHead, Close: !lp.keep}
	if lp.resp != nil {
		// net/http wrote the status and headers: go on in its framing.
		// It wrote "Connection: close" if the device asked for it (then
		// keep is false) or the server was shutting down (then the
		// connection given back is closed): the device and the poll agree.
		cl, err := strconv.ParseInt(lp.sw.Header().Get("Content-Length"), 10, 64)
		if err != nil {
			cl = -1
		}
		lp.pw.Begun(lp.sw.status, cl, lp.sw.written)
	}
	lp.sw = &statusWriter{ResponseWriter: lp.pw, status: lp.sw.status, written: lp.sw.written}
	lp.fw.body0 = nil // the server's body reader, and its buffers, go with the server's half
	lp.line.parked = true
	lp.h.Metrics.parked(1)
	lp.h.track(lp)
	return true
}

// park hands the poll to the poller until Exchange or the device has
// something to say, LongPollTimeout passes (while the answer has not
// begun) or the poll's context ends. A poll the poller cannot watch is
// held on a goroutine instead.
func (lp *longPoll) park() {
	if lp.pw.Idle() != nil {
		lp.end(true)
		return
	}
	var deadline time.Time
	if lp.resp == nil {
		deadline = lp.until
	}
	var device net.Conn
	if lp.watched {
		device = lp.conn
	}
	lp.mu.Lock()
	if lp.closing && !lp.closeSeen {
		lp.mu.Unlock()
		go lp.resume(wakeShutdown)
		return
	}
	w, err := lp.h.poller.Watch(lp.ctx, device, lp.ex.Conn(), deadline, func(r park.Reason) {
		lp.mu.Lock()
		lp.watch = nil
		lp.mu.Unlock()
		lp.resume(wakeFor(r))
	})
	lp.watch = w
	lp.mu.Unlock()
	if err != nil {
		lp.h.logger().LogAttrs(context.Background(), slog.LevelWarn, "a long poll could not be parked; held instead",
			slog.String("user", lp.line.user), slog.String("error", err.Error()))
		go lp.resume(wakeFailed)
	}
}

// resume runs the poll again after a wake: it moves the answer on as far as
// it can without waiting, then parks the poll again or ends it.
func (lp *longPoll) resume(why wake) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				lp.h.logger().LogAttrs(context.Background(), slog.LevelError, "panic serving a parked long poll",
					slog.String("user", lp.line.user), slog.Any("panic", v))
			}
			lp.end(true)
		}
	}()
	lp.mu.Lock()
	closing := lp.closing && !lp.closeSeen
	lp.closeSeen = lp.closeSeen || closing
	lp.mu.Unlock()
	if closing {
		// The connection closes after this answer. One not begun ends
		// now (503, Retry-After: the device asks another replica); a
		// begun one goes on (Shutdown waits for it).
		lp.keep, lp.pw.Close = false, true
		if lp.resp == nil {
			lp.cancel(errShuttingDown)
			why = wakeEnded
		}
	}
	switch why {
	case wakeDevice:
		switch park.CheckDevice(lp.conn) {
		case park.Gone:
			lp.line.deviceGone = true
			lp.end(true)
			return
		case park.Sent:
			// Watched no more; the answer is still awaited.
			lp.keep, lp.watched = false, false
			lp.sentMore.Store(true)
		}
		lp.park()
		return
	case wakeDeadline:
		lp.fail(errUpstreamTime)
		return
	case wakeEnded:
		if lp.resp != nil {
			lp.end(true) // the answer has begun: nothing else can be said
			return
		}
		lp.fail(lp.ctx.Err())
		return
	case wakeFailed:
		lp.hold()
		return
	}
	if lp.advance() {
		lp.park()
	}
}

// hold waits on this goroutine, for as long as it takes, for what a poll
// taken from its server could not be parked for. Until the answer's end a
// goroutine watches the device, so that its hang-up ends the poll as the
// poller would have seen it (bytes it sends before the answer's end are
// pipelined, and the connection closes after the answer).
func (lp *longPoll) hold() {
	lp.held = true
	lp.heldTaken.Store(true)
	if lp.watched {
		lp.unwatch = park.WatchHeld(lp.conn, func() {
			lp.gone.Store(true)
			lp.cancel(context.Canceled)
		}, func() { lp.sentMore.Store(true) })
	}
	lp.advance()
}

// stopWatchingDevice stops a held poll's device watcher: before the last
// byte of the answer goes.
func (lp *longPoll) stopWatchingDevice() {
	if lp.unwatch != nil {
		lp.unwatch()
		lp.unwatch = nil
	}
	if lp.gone.Load() {
		lp.line.deviceGone = true
	}
}

// end is the one exit of a long poll: its answer went whole, or is cut.
// Exchange's connection is closed unless the answer was read to its end.
// A poll still on the handler's goroutine leaves the rest to the handler
// (and a cut one aborts it); a poll taken from its server logs itself, and
// its connection rests until the device's next request, or closes.
func (lp *longPoll) end(cut bool) {
	if lp.ex != nil {
		lp.ex.Close()
	}
	lp.stopWatchingDevice()
	if lp.conn == nil {
		if cut {
			panic(http.ErrAbortHandler)
		}
		return
	}
	whole := false
	if cut {
		lp.cancel(context.Canceled) // a no-op when the poll ended already
		lp.pw.Abandon()
	} else {
		whole = lp.pw.End()
	}
	lp.conn.SetWriteDeadline(time.Time{}) // the server's from here on
	lp.h.untrack(lp)
	lp.h.Metrics.parked(-1)
	lp.h.log(lp.r, lp.sw, lp.line, lp.start)
	lp.finish()
	if whole && lp.keep && !lp.sentMore.Load() {
		lp.h.rest(lp.srv, lp.conn)
		return
	}
	lp.conn.Close()
}

// server is the server the poll's connection was taken from.
func (lp *longPoll) server() *http.Server { return lp.srv }

// shutdown tells the poll that its server shuts down: it acts on it now if
// parked, else when it next parks. A held one, which never parks again,
// whose answer has not begun is ended now (503: the device asks another
// replica), as a parked one is.
func (lp *longPoll) shutdown() {
	lp.mu.Lock()
	lp.closing = true
	w := lp.watch
	lp.watch = nil
	lp.mu.Unlock()
	if w != nil && w.Stop() {
		go lp.resume(wakeShutdown)
		return
	}
	if lp.heldTaken.Load() && !lp.begun.Load() {
		lp.cancel(errShuttingDown)
	}
}

// cut ends the poll at Shutdown's deadline.
func (lp *longPoll) cut() { lp.cancel(errShuttingDown) }
