// Package tcprelay is a TCP relay for tests of faults between a client and
// a server: it records what the client sent, can hold the client's bytes
// back (a server that stops answering), cut every connection (a restart,
// a firewall dropping the flow) and send new connections elsewhere (a
// balancer that moved). Users must not import it: it is test plumbing.
package tcprelay

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
)

// Relay accepts on a loopback address and relays each connection to its
// target.
type Relay struct {
	ln     net.Listener
	mu     sync.Mutex
	target string
	sent   bytes.Buffer
	held   bool
	gate   *sync.Cond
	conns  []net.Conn
}

// New starts a relay to target; it stops when the test ends.
func New(t testing.TB, target string) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{ln: ln, target: target}
	r.gate = sync.NewCond(&r.mu)
	t.Cleanup(func() { ln.Close(); r.Cut() })
	go r.serve()
	return r
}

// Addr is the relay's host:port.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

func (r *Relay) serve() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		target := r.target
		r.mu.Unlock()
		up, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			continue
		}
		r.mu.Lock()
		r.conns = append(r.conns, c, up)
		r.mu.Unlock()
		go func() { io.Copy(c, up); c.Close() }()
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					r.mu.Lock()
					for r.held {
						r.gate.Wait()
					}
					r.sent.Write(buf[:n])
					r.mu.Unlock()
					if _, werr := up.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			up.Close()
		}()
	}
}

// Saw reports whether a client sent s (in clear, as the relay sees it).
func (r *Relay) Saw(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Contains(r.sent.Bytes(), []byte(s))
}

// Hold holds the clients' bytes back (on) or lets them through (off).
func (r *Relay) Hold(on bool) {
	r.mu.Lock()
	r.held = on
	r.mu.Unlock()
	r.gate.Broadcast()
}

// Cut closes every connection the relay carries.
func (r *Relay) Cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = nil
}

// SwitchTo sends new connections to target, and cuts the ones it carries.
func (r *Relay) SwitchTo(target string) {
	r.mu.Lock()
	r.target = target
	r.mu.Unlock()
	r.Cut()
}
