// Package park keeps long polls without a goroutine each: a poller that
// watches a parked poll's two sockets (the device's and the upstream's)
// until one has something to say or a deadline passes, the writer of
// answers on connections taken from their http.Server, and the listener
// that gives those connections back to the server.
//
// A parked poll is watched once: the poller wakes it with one Reason, on a
// goroutine of its own, and forgets it; a poll that must wait again is
// watched again. The package knows nothing of Kerberos, users or logging.
package park

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// Reason says why a watch woke.
type Reason int

const (
	// Upstream: the upstream's socket has bytes, or closed.
	Upstream Reason = iota
	// Device: the device's socket has bytes, or closed.
	Device
	// Deadline: the watch's deadline passed.
	Deadline
	// Ended: the watch's context ended.
	Ended
	// Failed: the poller failed (epoll_wait, which only a bug of the
	// poller's can make fail) and watches nothing any more: the caller
	// waits on a goroutine instead.
	Failed
)

func (r Reason) String() string {
	switch r {
	case Upstream:
		return "upstream"
	case Device:
		return "device"
	case Deadline:
		return "deadline"
	case Ended:
		return "ended"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("park.Reason(%d)", int(r))
}

// ErrUnsupported: the poller runs on Linux only (epoll).
var ErrUnsupported = errors.New("long polls are parked on Linux only")

// socket is the socket under a connection (TLS or not).
func socket(c net.Conn) (syscall.RawConn, error) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("a %T has no socket to poll", c)
	}
	return sc.SyscallConn()
}

// DeviceState is what a device's socket said.
type DeviceState int

const (
	// Quiet: nothing to read after all (part of a TLS record).
	Quiet DeviceState = iota
	// Gone: closed, reset, or TLS close_notify.
	Gone
	// Sent: bytes before the answer (pipelining). They were read, and are
	// lost: the connection must close after the answer.
	Sent
)

// CheckDevice reads what woke the poller on a device's socket, waiting a
// moment for the rest of a TLS record.
func CheckDevice(conn net.Conn) DeviceState {
	var b [1]byte
	conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := conn.Read(b[:])
	conn.SetReadDeadline(time.Time{})
	switch {
	case n > 0:
		return Sent
	case isTimeout(err):
		return Quiet
	}
	return Gone
}

// WatchHeld watches a device's connection on a goroutine while its long
// poll is held (not parked): hungUp is called when the device hangs up,
// sent when it sends bytes (read, and lost: the connection must close
// after the answer); either ends the watch. The returned stop ends it
// otherwise, and waits for the goroutine. Stop it before the answer's last
// byte goes: bytes after it are the device's next request.
func WatchHeld(conn net.Conn, hungUp, sent func()) (stop func()) {
	done := make(chan struct{})
	var stopping atomic.Bool
	go func() {
		defer close(done)
		var b [1]byte
		n, err := conn.Read(b[:])
		switch {
		case n > 0:
			sent()
		case stopping.Load() && isTimeout(err):
		default:
			hungUp()
		}
	}()
	return func() {
		stopping.Store(true)
		conn.SetReadDeadline(time.Unix(1, 0))
		<-done
		conn.SetReadDeadline(time.Time{})
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
