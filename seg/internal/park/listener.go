package park

import (
	"net"
	"sync"
)

// Listener is what an http.Server serves the connections given back to it
// from: a long poll's connection, taken from the server, goes back when
// its answer has gone, and the server reads the device's next request from
// it as from any connection.
type Listener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

// NewListener makes a Listener.
func NewListener() *Listener {
	return &Listener{conns: make(chan net.Conn, 64), done: make(chan struct{})}
}

// Accept returns the next connection given back.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close closes the listener and the connections given back that no Accept
// took.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	l.drain()
	return nil
}

// Give hands conn to the server's Accept, or closes it once the listener
// is closed. A connection that went in as the listener closed (select
// picks at random when both are ready) is closed by the drain after it:
// no Accept will take it.
func (l *Listener) Give(conn net.Conn) {
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
func (l *Listener) drain() {
	for {
		select {
		case c := <-l.conns:
			c.Close()
		default:
			return
		}
	}
}

// Addr names the listener; each connection has its own addresses.
func (l *Listener) Addr() net.Addr { return givenBackAddr{} }

type givenBackAddr struct{}

func (givenBackAddr) Network() string { return "tcp" }
func (givenBackAddr) String() string  { return "connections given back by parked long polls" }
