//go:build linux || darwin || freebsd

package h1

import (
	"net"
	"syscall"
)

// closedByPeer reports whether an idle connection was closed by the server
// or has bytes waiting that no request asked for (a TLS close_notify): one
// non-blocking peek at the socket, so a request is never sent on a
// connection that is already gone.
func closedByPeer(raw net.Conn) bool {
	sc, ok := raw.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
		case err != nil, n >= 0:
			closed = true // EOF (n == 0), pending bytes, or a reset
		}
		return true // never wait for readiness
	})
	return closed || err != nil
}
