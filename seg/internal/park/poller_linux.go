package park

import (
	"context"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"
)

// Poller watches parked polls' sockets with an epoll instance of its own,
// beside the Go runtime's (a socket may be in both: readiness is not
// consumed by either). One goroutine waits in epoll_wait while any poll is
// watched, and ends a second after the last one left. Each socket is
// registered one-shot with its watch's id, never its descriptor, so a
// readiness that races with the watch's end finds no watch and is dropped.
// The zero value is ready to use.
type Poller struct {
	mu      sync.Mutex
	epfd    int
	on      bool // a goroutine waits on epfd
	watches map[uint64]*Watch
	next    uint64
}

// Watch is one parked poll on the poller, until it wakes or is stopped.
type Watch struct {
	pl      *Poller
	id      uint64
	fds     [2]syscall.RawConn // device, upstream
	wake    func(Reason)
	timer   *time.Timer
	stopCtx func() bool
}

// Watch watches device and upstream (either may be nil) until one of them
// is readable or closes, deadline passes (the zero time: none), or ctx
// ends; then wake runs, once, on a goroutine of its own, with the reason,
// and the watch is over. It fails when a connection has no socket to poll
// (a listener's wrapper hides it) or epoll refuses it: the caller then
// waits on a goroutine.
func (pl *Poller) Watch(ctx context.Context, device, upstream net.Conn, deadline time.Time, wake func(Reason)) (*Watch, error) {
	w := &Watch{pl: pl, wake: wake}
	for side, c := range []net.Conn{device, upstream} {
		if c == nil {
			continue
		}
		rc, err := socket(c)
		if err != nil {
			return nil, err
		}
		w.fds[side] = rc
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if !pl.on {
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return nil, fmt.Errorf("epoll_create1: %w", err)
		}
		pl.epfd, pl.on = fd, true
		if pl.watches == nil {
			pl.watches = map[uint64]*Watch{}
		}
		go pl.run(fd)
	}
	pl.next++
	w.id = pl.next
	for side, rc := range w.fds {
		if rc == nil {
			continue
		}
		if err := pl.ctl(syscall.EPOLL_CTL_ADD, rc, w.id<<1|uint64(side)); err != nil {
			pl.unwatch(w)
			return nil, err
		}
	}
	pl.watches[w.id] = w
	// Both run on goroutines of their own, which wait for pl.mu: a
	// context already ended or a deadline already past wake w at once.
	w.stopCtx = context.AfterFunc(ctx, func() { pl.fire(w, Ended) })
	if !deadline.IsZero() {
		w.timer = time.AfterFunc(time.Until(deadline), func() { pl.fire(w, Deadline) })
	}
	return w, nil
}

// Stop takes w off the poller and reports whether it was still watched:
// then its wake will not run, and the caller has the poll; else wake runs,
// or ran.
func (w *Watch) Stop() bool { return w.pl.take(w) }

func (pl *Poller) ctl(op int, rc syscall.RawConn, data uint64) error {
	var err error
	cerr := rc.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
			Fd: int32(uint32(data)), Pad: int32(uint32(data >> 32))}
		err = syscall.EpollCtl(pl.epfd, op, int(fd), &ev)
	})
	if cerr != nil {
		return cerr
	}
	if err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// unwatch takes w's sockets, timer and context hook off. pl.mu is held.
func (pl *Poller) unwatch(w *Watch) {
	delete(pl.watches, w.id)
	for _, rc := range w.fds {
		if rc != nil {
			pl.ctl(syscall.EPOLL_CTL_DEL, rc, 0) // a closed socket has left the set already
		}
	}
	w.fds = [2]syscall.RawConn{}
	if w.timer != nil {
		w.timer.Stop()
	}
	if w.stopCtx != nil {
		w.stopCtx()
	}
}

// take removes w if it is still watched, and reports whether it was.
func (pl *Poller) take(w *Watch) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if w.id == 0 || pl.watches[w.id] != w {
		return false
	}
	pl.unwatch(w)
	return true
}

// fire wakes w, if it is still watched.
func (pl *Poller) fire(w *Watch, why Reason) {
	if pl.take(w) {
		go w.wake(why)
	}
}

// fail stops the poller after epoll_wait failed: every watch wakes with
// Failed, and the next Watch starts a new epoll instance.
func (pl *Poller) fail(epfd int) {
	pl.mu.Lock()
	var list []*Watch
	for _, w := range pl.watches {
		list = append(list, w)
		pl.unwatch(w)
	}
	pl.on = false
	syscall.Close(epfd)
	pl.mu.Unlock()
	for _, w := range list {
		go w.wake(Failed)
	}
}

// run waits for readiness and wakes the watches it concerns, until none
// has been watched for a second.
func (pl *Poller) run(epfd int) {
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(epfd, events, int(time.Second/time.Millisecond))
		if err != nil && err != syscall.EINTR {
			pl.fail(epfd)
			return
		}
		for _, ev := range events[:max(n, 0)] {
			data := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			pl.mu.Lock()
			w := pl.watches[data>>1]
			pl.mu.Unlock()
			if w == nil {
				continue
			}
			why := Upstream
			if data&1 == 0 {
				why = Device
			}
			pl.fire(w, why)
		}
		if n == 0 {
			pl.mu.Lock()
			if len(pl.watches) == 0 {
				pl.on = false
				syscall.Close(epfd)
				pl.mu.Unlock()
				return
			}
			pl.mu.Unlock()
		}
	}
}
