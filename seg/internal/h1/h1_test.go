package h1_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segkcd/segkcd/seg/internal/h1"
)

// upstream is a scripted HTTP/1.1 server on loopback: each request is
// answered by answer, which writes raw bytes on the connection. It counts
// connections, and each close it sees.
type upstream struct {
	url    *url.URL
	answer func(n int, req *http.Request, conn net.Conn) bool // false: close the connection
	conns  atomic.Int32
	closed chan struct{}
	n      atomic.Int32
}

func newUpstream(t *testing.T, answer func(n int, req *http.Request, conn net.Conn) bool) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{answer: answer, closed: make(chan struct{}, 100)}
	u.url, _ = url.Parse("http://" + ln.Addr().String() + "/Microsoft-Server-ActiveSync")
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.conns.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { c.Close(); u.closed <- struct{}{} }()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					if !u.answer(int(u.n.Add(1)), req, c) {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return u
}

// stalledChunk begins a chunked answer with one chunk and sends nothing
// more until the client closes the connection (10 s at most).
func stalledChunk(n int, req *http.Request, conn net.Conn) bool {
	io.WriteString(conn, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	conn.Read(make([]byte, 1))
	return false
}

// slowly writes s a byte at a time, so that the client's reads end
// anywhere in it.
func slowly(conn net.Conn, s string) {
	for i := 0; i < len(s); i++ {
		conn.Write([]byte{s[i]})
		if i%7 == 0 {
			time.Sleep(50 * time.Microsecond)
		}
	}
}

func (u *upstream) req(t *testing.T, ctx context.Context) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.url.String(), strings.NewReader("<ping/>"))
	if err != nil {
		t.Fatal(err)
	}
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("<ping/>")), nil }
	return req
}

func roundTrip(t *testing.T, p *h1.Pools, u *upstream) (*http.Response, string, error) {
	t.Helper()
	resp, err := p.RoundTrip("alice", u.req(t, context.Background()))
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

// TestRoundTripScripted: answers written a byte at a time, in each shape an
// upstream may give, are read whole, and the connection is kept only when
// the answer left it clean.
func TestRoundTripScripted(t *testing.T) {
	cases := []struct {
		name   string
		answer string
		status int
		body   string
		kept   bool // the next request goes on the same connection
		trail  string
	}{
		{name: "length", answer: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", status: 200, body: "ok", kept: true},
		{name: "interim answers", answer: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
			status: 200, body: "ok", kept: true},
		{name: "204", answer: "HTTP/1.1 204 No Content\r\n\r\n", status: 204, kept: true},
		{name: "304", answer: "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n", status: 304, kept: true},
		{name: "chunked with trailers", answer: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n2\r\nok\r\n1\r\n!\r\n0\r\nX-T: v\r\n\r\n",
			status: 200, body: "ok!", kept: true, trail: "v"},
		// The extra bytes come with the body's last byte, as a desync
		// does: written later, they could not be told from an answer.
		{name: "extra bytes after the answer", answer: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no|kHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwrong",
			status: 200, body: "ok", kept: false},
		{name: "close delimited", answer: "HTTP/1.1 200 OK\r\n\r\nuntil the end", status: 200, body: "until the end", kept: false},
		{name: "Connection: close", answer: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", status: 200, body: "ok", kept: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := newUpstream(t, func(n int, req *http.Request, conn net.Conn) bool {
				if n == 1 {
					slow, rest, _ := strings.Cut(tc.answer, "|")
					slowly(conn, slow)
					io.WriteString(conn, rest)
					return !strings.Contains(tc.name, "close")
				}
				slowly(conn, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
				return true
			})
			p := h1.New(h1.Config{})
			resp, body, err := roundTrip(t, p, u)
			if err != nil || resp.StatusCode != tc.status || body != tc.body {
				t.Fatalf("first answer: %v %q %v", resp, body, err)
			}
			if tc.trail != "" && resp.Trailer.Get("X-T") != tc.trail {
				t.Errorf("trailer %q", resp.Trailer.Get("X-T"))
			}
			_, body, err = roundTrip(t, p, u)
			if err != nil || body != "second" {
				t.Fatalf("the next request was answered %q %v: the answers are out of step", body, err)
			}
			want := int32(2)
			if tc.kept {
				want = 1
			}
			if got := u.conns.Load(); got != want {
				t.Errorf("%d connections, want %d", got, want)
			}
		})
	}
}

// TestRoundTripFailures: a close in the middle of a body, a switch of
// protocols and headers past the bound each fail, and free the
// connection's place: the user's next request gets another.
func TestRoundTripFailures(t *testing.T) {
	cases := []struct {
		name   string
		answer string
		want   error // nil: any error, at the body
	}{
		{name: "close mid-body", answer: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"},
		{name: "close mid-chunk", answer: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"},
		{name: "close mid-headers", answer: "HTTP/1.1 200 OK\r\nContent-Le"},
		{name: "101", answer: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n", want: h1.ErrSwitchedProtocols},
		{name: "headers too long", answer: "HTTP/1.1 200 OK\r\nX-Long: " + strings.Repeat("a", 8<<10) + "\r\n\r\n", want: h1.ErrHeadersTooLong},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := newUpstream(t, func(n int, req *http.Request, conn net.Conn) bool {
				if n == 1 {
					slowly(conn, tc.answer)
					return false
				}
				io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
				return true
			})
			p := h1.New(h1.Config{MaxConnsPerUser: 1, MaxResponseHeaderBytes: 4 << 10})
			_, _, err := roundTrip(t, p, u)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			// One connection per user at most: the next request gets one
			// only if the failed one gave its place back.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			resp, err := p.RoundTrip("alice", u.req(t, ctx))
			if err != nil {
				t.Fatalf("the next request: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "second" {
				t.Errorf("the next answer: %q", b)
			}
		})
	}
}

// TestSendAwaitAnswer: a long poll's two phases. The answer that has not
// begun is awaited with a deadline (false: the caller may park), the
// connection is there for a poller, and the answer is read when it comes;
// read to its end, the connection is kept for the user's next request.
func TestSendAwaitAnswer(t *testing.T) {
	u := newUpstream(t, func(n int, req *http.Request, conn net.Conn) bool {
		if req.Header.Get("Authorization") != "Negotiate x" {
			io.WriteString(conn, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
			return true
		}
		time.Sleep(300 * time.Millisecond)
		// A chunk whole with its CRLF, as Exchange writes it: a lone CR
		// buffered would be taken for the body's next byte.
		slowly(conn, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
		io.WriteString(conn, "4\r\npong\r\n")
		time.Sleep(300 * time.Millisecond)
		slowly(conn, "0\r\n\r\n")
		return true
	})
	p := h1.New(h1.Config{})
	for i := range 2 {
		req := u.req(t, context.Background())
		req.Header.Set("Authorization", "Negotiate x")
		x, err := p.Send("alice", req)
		if err != nil {
			t.Fatal(err)
		}
		if x.Await(time.Now().Add(50 * time.Millisecond)) {
			t.Fatal("Await: an answer before it was written")
		}
		if x.Conn() == nil {
			t.Fatal("no connection for the poller")
		}
		if !x.Await(time.Now().Add(5 * time.Second)) {
			t.Fatal("Await: no answer")
		}
		resp, err := x.Answer(context.Background(), time.Now().Add(5*time.Second))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("Answer: %v %v", resp, err)
		}
		buf := make([]byte, 16)
		n, err := io.ReadAtLeast(resp.Body, buf, 4)
		if string(buf[:n]) != "pong" || err != nil {
			t.Fatalf("the first part: %q %v", buf[:n], err)
		}
		if x.Await(time.Now().Add(50 * time.Millisecond)) {
			t.Fatal("Await: the body's end before it was written")
		}
		if !x.Await(time.Now().Add(5 * time.Second)) {
			t.Fatal("Await: no end of the body")
		}
		if n, err := resp.Body.Read(buf); n != 0 || err != io.EOF {
			t.Fatalf("the end: %d %v", n, err)
		}
		x.Close()
		x.Close() // idempotent
		if got := u.conns.Load(); got != 1 {
			t.Fatalf("exchange %d: %d connections, want the first kept", i, got)
		}
	}
}

// TestSendNoDesync: bytes after an answer read through Send spoil the
// connection as they do after RoundTrip.
func TestSendNoDesync(t *testing.T) {
	u := newUpstream(t, func(n int, req *http.Request, conn net.Conn) bool {
		if n == 1 {
			io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwrong")
			return true
		}
		io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
		return true
	})
	p := h1.New(h1.Config{})
	x, err := p.Send("alice", u.req(t, context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := x.Answer(context.Background(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	x.Close()
	if _, body, err := roundTrip(t, p, u); err != nil || body != "second" {
		t.Fatalf("the next request: %q %v", body, err)
	}
	if got := u.conns.Load(); got != 2 {
		t.Errorf("%d connections: the spoilt one was kept", got)
	}
}

// TestAnswerDeadline: an answer that does not begin by headersBy fails with
// os.ErrDeadlineExceeded, and its connection is closed.
func TestAnswerDeadline(t *testing.T) {
	u := newUpstream(t, func(int, *http.Request, net.Conn) bool { time.Sleep(10 * time.Second); return false })
	p := h1.New(h1.Config{})
	x, err := p.Send("alice", u.req(t, context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = x.Answer(context.Background(), time.Now().Add(100*time.Millisecond))
	if !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("Answer past its deadline: %v after %v", err, time.Since(start))
	}
	x.Close()
	if p.Users() != 1 {
		t.Errorf("%d users", p.Users())
	}
}

// TestExchangeCloseMidBody: closing an exchange whose answer is still
// coming does not wait for the rest (an hour, for a Ping): the connection
// is closed at once, and the server sees it.
func TestExchangeCloseMidBody(t *testing.T) {
	u := newUpstream(t, stalledChunk)
	p := h1.New(h1.Config{})
	x, err := p.Send("alice", u.req(t, context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := x.Answer(context.Background(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAtLeast(resp.Body, make([]byte, 8), 2)
	done := make(chan struct{})
	go func() { x.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Close waited for the rest of the answer")
	}
	select {
	case <-u.closed:
	case <-time.After(2 * time.Second):
		t.Fatal("the server did not see the connection close")
	}
}

// TestAnswerContext: the context given to Answer ends the exchange while
// the body waits.
func TestAnswerContext(t *testing.T) {
	u := newUpstream(t, stalledChunk)
	p := h1.New(h1.Config{})
	x, err := p.Send("alice", u.req(t, context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := x.Answer(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err = io.ReadAll(resp.Body)
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("the body's read across the context's end: %v after %v", err, time.Since(start))
	}
}

// TestCloseMidBody (review of issue 29): closing an answer's body before
// its end, through RoundTrip as through Send, returns at once, where
// net/http's Close reads the rest, which a stalled upstream never sends.
func TestCloseMidBody(t *testing.T) {
	u := newUpstream(t, stalledChunk)
	p := h1.New(h1.Config{})
	resp, err := p.RoundTrip("alice", u.req(t, context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAtLeast(resp.Body, make([]byte, 8), 2)
	start := time.Now()
	resp.Body.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close mid-body took %v", d)
	}
}

// TestAwaitSplitChunk (review of issue 29): a chunk whose CRLF comes apart
// from its data leaves the CRLF buffered. Await does not take it for the
// body's next byte: net/http's chunked reader, given it, would wait for the
// next chunk's size line without a deadline.
func TestAwaitSplitChunk(t *testing.T) {
	u := newUpstream(t, func(n int, req *http.Request, conn net.Conn) bool {
		io.WriteString(conn, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npong")
		time.Sleep(100 * time.Millisecond)
		io.WriteString(conn, "\r")
		time.Sleep(100 * time.Millisecond)
		io.WriteString(conn, "\n")
		time.Sleep(700 * time.Millisecond)
		io.WriteString(conn, "4\r\nmore\r\n0\r\n\r\n")
		return true
	})
	p := h1.New(h1.Config{})
	x, err := p.Send("alice", u.req(t, context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	resp, err := x.Answer(context.Background(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, err := resp.Body.Read(buf); string(buf[:n]) != "pong" || err != nil {
		t.Fatalf("the first chunk: %q %v", buf[:n], err)
	}
	// The CRLF comes within this wait, the next chunk after it.
	if x.Await(time.Now().Add(500 * time.Millisecond)) {
		t.Fatal("Await took the chunk's CRLF for the body's next byte")
	}
	if !x.Await(time.Now().Add(5 * time.Second)) {
		t.Fatal("no next chunk")
	}
	start := time.Now()
	n, err := resp.Body.Read(buf)
	if string(buf[:n]) != "more" || err != nil && err != io.EOF || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("the next chunk: %q %v after %v", buf[:n], err, time.Since(start))
	}
}

// Authorize makes each request's header on the connection it goes on, with
// the pool's user (no TLS here: no state); Send and RoundTrip alike, and a
// new header for each request on a kept connection. An error fails the
// request before a byte is written and closes the connection.
func TestAuthorize(t *testing.T) {
	var seen []string
	var mu sync.Mutex
	u := newUpstream(t, func(n int, req *http.Request, conn net.Conn) bool {
		mu.Lock()
		seen = append(seen, req.Header.Get("Authorization"))
		mu.Unlock()
		io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	var calls atomic.Int32
	fail := atomic.Bool{}
	p := h1.New(h1.Config{Authorize: func(user string, req *http.Request, cs *tls.ConnectionState) (string, error) {
		if fail.Load() {
			return "", errors.New("no header for this one")
		}
		if user != "alice" || cs != nil {
			t.Errorf("Authorize for %q, TLS state %v", user, cs)
		}
		return fmt.Sprintf("Negotiate %d", calls.Add(1)), nil
	}})
	for i := 0; i < 2; i++ {
		if _, _, err := roundTrip(t, p, u); err != nil {
			t.Fatal(err)
		}
	}
	x, err := p.Send("alice", u.req(t, context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := x.Answer(context.Background(), time.Now().Add(5*time.Second)); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	x.Close()
	mu.Lock()
	if strings.Join(seen, ",") != "Negotiate 1,Negotiate 2,Negotiate 3" {
		t.Errorf("headers on the wire: %q", seen)
	}
	mu.Unlock()
	fail.Store(true)
	before := u.n.Load()
	if _, _, err := roundTrip(t, p, u); err == nil || !strings.Contains(err.Error(), "no header for this one") {
		t.Errorf("a failing Authorize: %v", err)
	}
	select {
	case <-u.closed:
	case <-time.After(5 * time.Second):
		t.Error("the connection stayed open after a failing Authorize")
	}
	if u.n.Load() != before {
		t.Error("a request went out after a failing Authorize")
	}
}
