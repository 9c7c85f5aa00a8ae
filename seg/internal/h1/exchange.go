package h1

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"time"
)

// Exchange is a request sent by Pools.Send whose answer is awaited: the
// connection stays the user's and busy, and nothing is held for it but
// the connection until the answer begins. One goroutine at a time uses it.
type Exchange struct {
	u       *conns
	c       *conn         // nil once the connection is the body's, or closed
	req     *http.Request // the method and Close only, for reading the answer
	first   [1]byte
	have    bool  // first holds the answer's first byte
	err     error // the connection failed before it
	body    *body // the answer's, once Answer read its head
	release func()
	closed  bool
}

// Conn is the TCP connection under the exchange, for a poller to watch
// for readiness. It must not be read or written.
func (x *Exchange) Conn() net.Conn {
	if x.body != nil {
		return x.body.c.raw
	}
	if x.c == nil {
		return nil
	}
	return x.c.raw
}

// Await reports whether the upstream has something to say, waiting until
// at most (the zero time: for as long as it takes): before Answer, the
// answer's first byte (or the connection's failure); after it, the body's
// next byte (or its end). After a poller's word that the socket is
// readable, Await may still report false: what came was part of a TLS
// record, or a message TLS handles itself.
func (x *Exchange) Await(until time.Time) bool {
	switch {
	case x.body != nil:
		return x.body.await(until)
	case x.c == nil || x.have || x.err != nil:
		return true
	}
	x.c.conn.SetReadDeadline(until)
	n, err := x.c.conn.Read(x.first[:])
	x.c.conn.SetReadDeadline(time.Time{})
	switch {
	case n == 1:
		x.have = true
	case isTimeout(err):
		return false
	case err == nil:
		x.err = io.ErrNoProgress
	default:
		x.err = err
	}
	return true
}

// errExchangeUsed: Answer was called twice, or after Close.
var errExchangeUsed = errors.New("the exchange's answer was read, or the exchange closed")

// Answer reads the answer's status and headers, skipping interim (1xx)
// answers, waiting for them until headersBy (zero: no bound); past it, the
// error matches os.ErrDeadlineExceeded. ctx's end closes the connection,
// from now until the body is done with. Reading the body to its end gives
// the connection back to the user's idle ones (when nothing is left over
// on it); closing the body before, or an error, closes it.
func (x *Exchange) Answer(ctx context.Context, headersBy time.Time) (*http.Response, error) {
	if x.c == nil || x.body != nil {
		return nil, errExchangeUsed
	}
	c := x.c
	x.c = nil // the connection is the answer's from here, or closed
	stop := context.AfterFunc(ctx, func() { c.conn.Close() })
	c.conn.SetReadDeadline(headersBy)
	if !x.have && x.err == nil {
		if _, err := io.ReadFull(c.conn, x.first[:]); err != nil {
			x.err = err
		}
	}
	if x.err != nil {
		return nil, x.u.fail(ctx, c, stop, x.err)
	}
	resp, err := x.u.readAnswer(ctx, c, x.req, x.first[0], stop, nil, pollBuffer)
	if err != nil {
		return nil, err
	}
	c.conn.SetReadDeadline(time.Time{})
	x.body = resp.Body.(*body)
	return resp, nil
}

// Close ends the exchange, idempotently: a connection whose answer was not
// read to its end is closed, and the user's place is freed.
func (x *Exchange) Close() {
	if x.closed {
		return
	}
	x.closed = true
	if x.c != nil {
		x.u.close(x.c)
		x.c = nil
	}
	if x.body != nil {
		x.body.Close()
	}
	if x.release != nil {
		x.release()
	}
}
