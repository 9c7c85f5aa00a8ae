//go:build !linux && !darwin && !freebsd

package h1

import "net"

// closedByPeer cannot peek at the socket here: a connection the server
// closed while idle is found by sending on it.
func closedByPeer(raw net.Conn) bool { return false }
