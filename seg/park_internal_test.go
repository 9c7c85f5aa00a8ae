package seg

import (
	"net"
	"testing"
	"time"
)

// TestGiveBackAfterClose: connections handed back as or after the server
// shuts down are closed, never left in the listener's queue unserved.
func TestGiveBackAfterClose(t *testing.T) {
	l := &giveBackListener{conns: make(chan net.Conn, 64), done: make(chan struct{})}
	l.Close()
	var peers []net.Conn
	for i := 0; i < 50; i++ {
		a, b := net.Pipe()
		l.give(a)
		peers = append(peers, b)
	}
	for i, b := range peers {
		b.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := b.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("connection %d given back after Close was left open: %v", i, err)
		}
	}
}
