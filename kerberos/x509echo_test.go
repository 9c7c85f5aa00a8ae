package kerberos_test

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/messages"

	"github.com/segkcd/segkcd/kerberos"
)

// replyTap dials like a net.Dialer and keeps every reply the KDC sends.
type replyTap struct {
	mu      sync.Mutex
	replies [][]byte
}

func (r *replyTap) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &tapConn{Conn: c, tap: r, stream: network == "tcp"}, nil
}

type tapConn struct {
	net.Conn
	tap    *replyTap
	stream bool
	buf    bytes.Buffer
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.buf.Write(p[:n])
	if !c.stream {
		c.tap.add(append([]byte(nil), p[:n]...))
		c.buf.Reset()
	}
	return n, err
}

func (c *tapConn) Close() error {
	if c.stream && c.buf.Len() > 4 {
		c.tap.add(append([]byte(nil), c.buf.Bytes()[4:]...))
	}
	return c.Conn.Close()
}

func (r *replyTap) add(b []byte) { r.mu.Lock(); r.replies = append(r.replies, b); r.mu.Unlock() }

// What Samba 4.22 does with PA-S4U-X509-USER, which we send with every
// S4U2Self under an AES session key: the reply's padata, read off the wire.
// When the KDC echoes it (reply key usage 27), S4U2Self has already checked
// the echo; the test says which case the lab is.
func TestPAS4UX509UserEchoOnLab(t *testing.T) {
	e := setup(t)
	tap := &replyTap{}
	c := e.clientVia(&kerberos.Transport{Config: e.cfg, Dialer: tap})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.S4U2Self(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	tap.mu.Lock()
	defer tap.mu.Unlock()
	echoed, tgsReps := false, 0
	for _, b := range tap.replies {
		var rep messages.TGSRep
		if rep.Unmarshal(b) != nil {
			continue
		}
		tgsReps++
		for _, pa := range rep.PAData {
			if pa.PADataType == 130 {
				echoed = true
			}
		}
	}
	if tgsReps == 0 {
		t.Fatal("no TGS-REP seen on the wire")
	}
	t.Logf("Samba 4.22 echoes PA-S4U-X509-USER in the S4U2Self reply: %v", echoed)
}
