package seg

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"
)

const pollerSupported = true

// poller watches parked long polls' sockets with an epoll instance of its
// own, beside the Go runtime's (a socket may be in both: readiness is not
// consumed by either). One goroutine waits in epoll_wait while any poll is
// parked, and ends a second after the last one left. Each socket is
// registered one-shot with the poll's id, never its descriptor, so a
// readiness that races with the poll's end finds no poll and is dropped.
type poller struct {
	mu    sync.Mutex
	epfd  int // -1 (or 0 in the zero value) when no goroutine waits
	on    bool
	polls map[uint64]*parkedPoll
	next  uint64
}

// add parks p: its sockets are watched (the device's only while no stray
// bytes came from it), and its context's end and LongPollTimeout wake it.
func (pl *poller) add(p *parkedPoll) error {
	var up, dev syscall.RawConn
	var err error
	if !p.resting { // a resting connection waits for its device only
		if up, err = p.upstream(); err != nil {
			return err
		}
	}
	if p.watch {
		if dev, err = rawConn(p.conn); err != nil {
			return err
		}
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if !pl.on {
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return fmt.Errorf("seg: epoll_create1: %w", err)
		}
		pl.epfd, pl.on = fd, true
		if pl.polls == nil {
			pl.polls = map[uint64]*parkedPoll{}
		}
		go pl.run(fd)
	}
	pl.next++
	p.id = pl.next
	p.fds = [2]syscall.RawConn{dev, up}
	for side, rc := range p.fds {
		if rc == nil {
			continue
		}
		if err := pl.ctl(syscall.EPOLL_CTL_ADD, rc, p.id<<1|uint64(side)); err != nil {
			pl.forget(p)
			return err
		}
	}
	pl.polls[p.id] = p
	// A context that has ended already runs this at once, on a goroutine
	// of its own, which waits for pl.mu.
	p.stop = context.AfterFunc(p.ctx, func() { pl.wake(p, wakeEnded) })
	return nil
}

// upstream is the socket that brings Exchange's answer.
func (p *parkedPoll) upstream() (syscall.RawConn, error) {
	if p.hint.pending != nil {
		return rawConn(p.hint.pending.raw())
	}
	if p.hint.h1 != nil {
		return rawConn(p.hint.h1.c.raw)
	}
	return nil, fmt.Errorf("seg: a parked poll with nothing to wait for")
}

func (pl *poller) ctl(op int, rc syscall.RawConn, data uint64) error {
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
		return fmt.Errorf("seg: epoll_ctl: %w", err)
	}
	return nil
}

// forget takes p off the poller's watch. pl.mu is held.
func (pl *poller) forget(p *parkedPoll) {
	delete(pl.polls, p.id)
	for _, rc := range p.fds {
		if rc != nil {
			pl.ctl(syscall.EPOLL_CTL_DEL, rc, 0) // a closed socket has left the set already
		}
	}
	p.fds = [2]syscall.RawConn{}
	if p.stop != nil {
		p.stop()
		p.stop = nil
	}
}

// take removes p if it is still parked, and reports whether it was: the
// one who takes it runs it.
func (pl *poller) take(p *parkedPoll) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if p.id == 0 || pl.polls[p.id] != p {
		return false
	}
	pl.forget(p)
	return true
}

// wake runs p on a goroutine of its own, if it is still parked.
func (pl *poller) wake(p *parkedPoll, why wake) {
	if pl.take(p) {
		go p.resume(why)
	}
}

// fail stops the poller after epoll_wait failed: every parked poll is
// held on a goroutine of its own instead, as a poll that cannot be parked
// is, and the next one to park starts a new epoll instance.
func (pl *poller) fail(epfd int) {
	pl.mu.Lock()
	var list []*parkedPoll
	for _, p := range pl.polls {
		list = append(list, p)
		pl.forget(p)
	}
	pl.on = false
	syscall.Close(epfd)
	pl.mu.Unlock()
	for _, p := range list {
		if p.resting {
			go p.wakeRested(wakeDevice) // the server waits for its next request
			continue
		}
		p.holdInstead()
	}
}

// run waits for readiness and wakes the polls it concerns, until no poll
// has been parked for a second.
func (pl *poller) run(epfd int) {
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(epfd, events, int(time.Second/time.Millisecond))
		if err != nil && err != syscall.EINTR {
			pl.fail(epfd) // only a bug of the poller's can cause it
			return
		}
		for _, ev := range events[:max(n, 0)] {
			data := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			pl.mu.Lock()
			p := pl.polls[data>>1]
			pl.mu.Unlock()
			if p == nil {
				continue
			}
			why := wakeUpstream
			if data&1 == 0 {
				why = wakeDevice
			}
			pl.wake(p, why)
		}
		if n == 0 {
			pl.mu.Lock()
			if len(pl.polls) == 0 {
				pl.on = false
				syscall.Close(epfd)
				pl.mu.Unlock()
				return
			}
			pl.mu.Unlock()
		}
	}
}
