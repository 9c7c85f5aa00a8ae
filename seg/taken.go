package seg

import (
	"context"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/segkcd/segkcd/seg/internal/park"
)

// Connections the handler takes from their servers: parked long polls, and
// their connections resting between the poll's answer and the device's
// next request. http.Server knows nothing of them once taken, so the
// handler ends them at the server's Shutdown, and gives the resting ones
// back to the server through a listener of its own (park.Listener).

// pollerSupported: long polls are parked on Linux only (epoll); elsewhere
// they are held.
const pollerSupported = runtime.GOOS == "linux"

// taken is a connection the handler took from its server.
type taken interface {
	server() *http.Server
	shutdown() // the server shuts down
	cut()      // ProxyHandler.Shutdown's deadline passed
}

// track adds t to the connections taken from their servers; during a
// shutdown, t is told at once.
func (h *ProxyHandler) track(t taken) {
	h.parkMu.Lock()
	if h.live == nil {
		h.live = map[taken]struct{}{}
	}
	if len(h.live) == 0 {
		h.liveGone = make(chan struct{})
	}
	h.live[t] = struct{}{}
	closing := h.closing
	h.parkMu.Unlock()
	if closing {
		t.shutdown()
	}
}

// untrack removes t.
func (h *ProxyHandler) untrack(t taken) {
	h.parkMu.Lock()
	defer h.parkMu.Unlock()
	delete(h.live, t)
	if len(h.live) == 0 && h.liveGone != nil {
		close(h.liveGone)
		h.liveGone = nil
	}
}

// shutdownAll tells every connection taken from srv (nil: from any server)
// that it shuts down.
func (h *ProxyHandler) shutdownAll(srv *http.Server) {
	h.parkMu.Lock()
	var list []taken
	for t := range h.live {
		if srv == nil || t.server() == srv {
			list = append(list, t)
		}
	}
	h.parkMu.Unlock()
	for _, t := range list {
		t.shutdown()
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
	h.shutdownAll(nil)
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
			for t := range h.live {
				t.cut()
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
func (h *ProxyHandler) serving(srv *http.Server) *park.Listener {
	h.serversMu.Lock()
	defer h.serversMu.Unlock()
	if l := h.servers[srv]; l != nil {
		return l
	}
	if h.servers == nil {
		h.servers = map[*http.Server]*park.Listener{}
	}
	l := park.NewListener()
	h.servers[srv] = l
	srv.RegisterOnShutdown(func() {
		l.Close()
		h.shutdownAll(srv)
	})
	go func() {
		srv.Serve(l) // returns at the server's Shutdown or Close
		l.Close()
	}()
	return l
}

// restingConn is a device connection whose long poll's answer ended,
// resting on the poller until the device begins its next request.
type restingConn struct {
	h     *ProxyHandler
	srv   *http.Server
	conn  net.Conn
	mu    sync.Mutex
	watch *park.Watch
	// closing: the server shuts down; the connection closes.
	closing bool
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
	var until time.Time
	if idle > 0 {
		until = time.Now().Add(idle)
	}
	q := &restingConn{h: h, srv: srv, conn: conn}
	h.track(q)
	q.mu.Lock()
	if q.closing {
		q.mu.Unlock()
		q.end(false)
		return
	}
	w, err := h.poller.Watch(context.Background(), conn, nil, until, func(r park.Reason) {
		// The device began its next request (or the poller failed: it
		// is given back at once, as before); else IdleTimeout passed.
		q.end(r == park.Device || r == park.Failed)
	})
	q.watch = w
	q.mu.Unlock()
	if err != nil {
		q.end(true)
	}
}

// end ends the rest: the connection goes back to the server (giveBack),
// unless the server shuts down, or is closed.
func (q *restingConn) end(giveBack bool) {
	q.h.untrack(q)
	q.mu.Lock()
	closing := q.closing
	q.mu.Unlock()
	if giveBack && !closing {
		q.h.serving(q.srv).Give(q.conn)
		return
	}
	q.conn.Close()
}

func (q *restingConn) server() *http.Server { return q.srv }

func (q *restingConn) shutdown() {
	q.mu.Lock()
	q.closing = true
	w := q.watch
	q.watch = nil
	q.mu.Unlock()
	if w != nil && w.Stop() {
		q.end(false)
	}
}

// cut: a resting connection was closed at the shutdown's start already.
func (q *restingConn) cut() {}
