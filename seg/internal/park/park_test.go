package park_test

import (
	"context"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/segkcd/segkcd/seg/internal/park"
)

// pair is a connected pair of TCP sockets on loopback.
func pair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func linuxOnly(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the poller is Linux's (epoll)")
	}
}

// woken waits for a watch's one wake.
func woken(t *testing.T, ch chan park.Reason, want park.Reason) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("woke for %v, want %v", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no wake, want %v", want)
	}
	select {
	case got := <-ch:
		t.Fatalf("woke twice: %v after %v", got, want)
	case <-time.After(50 * time.Millisecond):
	}
}

// TestWatchWakes: each of the watch's reasons wakes it, once.
func TestWatchWakes(t *testing.T) {
	linuxOnly(t)
	var pl park.Poller
	for _, tc := range []struct {
		name string
		act  func(dev, devPeer, up, upPeer net.Conn, cancel context.CancelFunc)
		want park.Reason
	}{
		{"upstream bytes", func(_, _, _, upPeer net.Conn, _ context.CancelFunc) { upPeer.Write([]byte("H")) }, park.Upstream},
		{"upstream closes", func(_, _, _, upPeer net.Conn, _ context.CancelFunc) { upPeer.Close() }, park.Upstream},
		{"device bytes", func(_, devPeer, _, _ net.Conn, _ context.CancelFunc) { devPeer.Write([]byte("P")) }, park.Device},
		{"device hangs up", func(_, devPeer, _, _ net.Conn, _ context.CancelFunc) { devPeer.Close() }, park.Device},
		{"context", func(_, _, _, _ net.Conn, cancel context.CancelFunc) { cancel() }, park.Ended},
		{"deadline", func(net.Conn, net.Conn, net.Conn, net.Conn, context.CancelFunc) {}, park.Deadline},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev, devPeer := pair(t)
			up, upPeer := pair(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ch := make(chan park.Reason, 2)
			w, err := pl.Watch(ctx, dev, up, time.Now().Add(300*time.Millisecond), func(r park.Reason) { ch <- r })
			if err != nil {
				t.Fatal(err)
			}
			tc.act(dev, devPeer, up, upPeer, cancel)
			woken(t, ch, tc.want)
			if w.Stop() {
				t.Error("Stop after the wake reported the watch still on")
			}
		})
	}
}

// TestWatchStop: a stopped watch never wakes; what is ready at once (a
// deadline past, a context ended) wakes without waiting.
func TestWatchStop(t *testing.T) {
	linuxOnly(t)
	var pl park.Poller
	dev, devPeer := pair(t)
	ch := make(chan park.Reason, 2)
	w, err := pl.Watch(context.Background(), dev, nil, time.Now().Add(100*time.Millisecond), func(r park.Reason) { ch <- r })
	if err != nil {
		t.Fatal(err)
	}
	if !w.Stop() {
		t.Fatal("Stop of a watch on: false")
	}
	devPeer.Write([]byte("x"))
	select {
	case r := <-ch:
		t.Fatalf("a stopped watch woke: %v", r)
	case <-time.After(300 * time.Millisecond):
	}
	// The socket can be watched again (it left the epoll set).
	if _, err := pl.Watch(context.Background(), dev, nil, time.Time{}, func(r park.Reason) { ch <- r }); err != nil {
		t.Fatal(err)
	}
	woken(t, ch, park.Device)
	if _, err := pl.Watch(context.Background(), nil, nil, time.Now().Add(-time.Second), func(r park.Reason) { ch <- r }); err != nil {
		t.Fatal(err)
	}
	woken(t, ch, park.Deadline)
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := pl.Watch(ended, nil, nil, time.Time{}, func(r park.Reason) { ch <- r }); err != nil {
		t.Fatal(err)
	}
	woken(t, ch, park.Ended)
}

// TestWatchNoSocket: a connection without a socket (a pipe, a wrapper that
// hides it) cannot be watched.
func TestWatchNoSocket(t *testing.T) {
	linuxOnly(t)
	var pl park.Poller
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := pl.Watch(context.Background(), a, nil, time.Time{}, func(park.Reason) {}); err == nil {
		t.Fatal("a pipe was watched")
	}
	c, _ := pair(t)
	if _, err := pl.Watch(context.Background(), struct{ net.Conn }{c}, nil, time.Time{}, func(park.Reason) {}); err == nil {
		t.Fatal("a wrapper that hides its socket was watched")
	}
}

// TestWatchMany: a thousand watches at once each wake for their own socket.
func TestWatchMany(t *testing.T) {
	linuxOnly(t)
	var pl park.Poller
	const n = 1000
	ch := make(chan int, n)
	peers := make([]net.Conn, n)
	for i := range n {
		up, upPeer := pair(t)
		peers[i] = upPeer
		if _, err := pl.Watch(context.Background(), nil, up, time.Time{}, func(park.Reason) { ch <- i }); err != nil {
			t.Fatal(err)
		}
	}
	for i := n - 1; i >= 0; i-- {
		peers[i].Write([]byte("x"))
	}
	seen := make([]bool, n)
	for range n {
		select {
		case i := <-ch:
			if seen[i] {
				t.Fatalf("watch %d woke twice", i)
			}
			seen[i] = true
		case <-time.After(5 * time.Second):
			t.Fatal("not every watch woke")
		}
	}
}

// TestCheckDevice: what a device's socket says when the poller woke for it.
func TestCheckDevice(t *testing.T) {
	dev, peer := pair(t)
	if s := park.CheckDevice(dev); s != park.Quiet {
		t.Errorf("nothing sent: %v", s)
	}
	peer.Write([]byte("GET"))
	if s := park.CheckDevice(dev); s != park.Sent {
		t.Errorf("bytes sent: %v", s)
	}
	peer.Close()
	dev.Read(make([]byte, 8))
	if s := park.CheckDevice(dev); s != park.Gone {
		t.Errorf("hung up: %v", s)
	}
}

// TestWatchHeld: a held poll's device watcher reports a hang-up, or bytes
// sent, and stops without taking anything when neither came.
func TestWatchHeld(t *testing.T) {
	dev, peer := pair(t)
	stop := park.WatchHeld(dev, func() { t.Error("hung up, with nothing done") }, func() { t.Error("sent, with nothing sent") })
	time.Sleep(50 * time.Millisecond)
	stop()
	// The connection is whole after it: no deadline left, nothing read.
	peer.Write([]byte("next"))
	b := make([]byte, 4)
	dev.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := dev.Read(b); string(b[:n]) != "next" || err != nil {
		t.Fatalf("after the watch: %q %v", b[:n], err)
	}
	dev.SetReadDeadline(time.Time{})

	sent := make(chan struct{})
	stop = park.WatchHeld(dev, func() { t.Error("bytes taken for a hang-up") }, func() { close(sent) })
	peer.Write([]byte("x"))
	select {
	case <-sent:
	case <-time.After(5 * time.Second):
		t.Fatal("bytes sent were not reported")
	}
	stop()

	gone := make(chan struct{})
	stop = park.WatchHeld(dev, func() { close(gone) }, func() { t.Error("a hang-up taken for bytes") })
	peer.Close()
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("a hang-up was not reported")
	}
	stop()
}

// TestGiveBackAfterClose: connections given back as or after the server
// shuts down are closed, never left in the listener's queue unserved.
func TestGiveBackAfterClose(t *testing.T) {
	l := park.NewListener()
	l.Close()
	var peers []net.Conn
	for range 50 {
		a, b := net.Pipe()
		l.Give(a)
		peers = append(peers, b)
	}
	for i, b := range peers {
		b.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := b.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("connection %d given back after Close was left open: %v", i, err)
		}
	}
	if _, err := l.Accept(); err != net.ErrClosed {
		t.Errorf("Accept after Close: %v", err)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
