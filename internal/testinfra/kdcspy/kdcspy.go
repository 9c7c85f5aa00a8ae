// Package kdcspy counts the Kerberos requests a client sends, by decoding
// each one: AS exchanges, S4U2Self (a TGS-REQ with PA-FOR-USER) and
// S4U2Proxy (a TGS-REQ with an additional ticket). A request sent again
// after a timeout carries the same nonce; it is counted once and reported
// apart. Tests and benchmarks use it to show how many exchanges reached the
// KDC; it is not product code.
package kdcspy

import (
	"context"
	"net"
	"strings"
	"sync"

	"github.com/jcmturner/gokrb5/v8/messages"
)

// Counts are what a Counter has seen.
type Counts struct {
	AS, S4U2Self, S4U2Proxy int
	Resent                  int // S4U requests seen again with the same nonce
}

// Counter counts requests. The zero value is ready to use; methods are safe
// for concurrent use.
type Counter struct {
	mu     sync.Mutex
	c      Counts
	nonces map[int]bool
}

// Observe counts one request message (without TCP's length prefix).
func (k *Counter) Observe(msg []byte) {
	var req messages.TGSReq
	if err := req.Unmarshal(msg); err != nil {
		var as messages.ASReq
		if as.Unmarshal(msg) == nil {
			k.mu.Lock()
			k.c.AS++
			k.mu.Unlock()
		}
		return
	}
	self := false
	for _, pa := range req.PAData {
		self = self || pa.PADataType == 129 // PA-FOR-USER
	}
	proxy := len(req.ReqBody.AdditionalTickets) > 0
	if !self && !proxy {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.nonces == nil {
		k.nonces = map[int]bool{}
	}
	if k.nonces[req.ReqBody.Nonce] {
		k.c.Resent++
		return
	}
	k.nonces[req.ReqBody.Nonce] = true
	if proxy {
		k.c.S4U2Proxy++
	} else {
		k.c.S4U2Self++
	}
}

// Counts returns the counts so far.
func (k *Counter) Counts() Counts {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.c
}

// DialContext dials like a net.Dialer and observes every request written
// on the connection: a kerberos.Transport's Dialer.
func (k *Counter) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &conn{Conn: c, k: k, stream: strings.HasPrefix(network, "tcp")}, nil
}

type conn struct {
	net.Conn
	k      *Counter
	stream bool
}

// Write observes the request; the transport writes one whole message per
// call (UDP datagram, or TCP length prefix and message).
func (c *conn) Write(b []byte) (int, error) {
	msg := b
	if c.stream && len(b) > 4 {
		msg = b[4:]
	}
	c.k.Observe(msg)
	return c.Conn.Write(b)
}
