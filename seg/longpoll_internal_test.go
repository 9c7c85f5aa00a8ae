package seg

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Lab-free tests of a long poll's device side: raw sockets that hang up at
// each stage, pipeline, or send stray bytes while their poll waits, against
// a scripted Exchange.

// chunkedThenWait begins a chunked answer and sends nothing more until the
// gateway closes the connection.
func chunkedThenWait(conn net.Conn) {
	io.WriteString(conn, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nalice\n\r\n")
	io.Copy(io.Discard, conn)
}

// TestLongPollHangUps: a device that hangs up ends its poll, and the poll's
// Exchange connection is closed, at every stage: before the poll is
// parked, parked before the answer, parked between the answer's parts,
// and held (parked not possible) before and after the answer began.
func TestLongPollHangUps(t *testing.T) {
	cases := []struct {
		name   string
		bare   bool          // the listener hides its sockets: held
		wait   time.Duration // before the device hangs up
		answer func(conn net.Conn)
	}{
		{"before parking", false, parkAfter / 4, func(conn net.Conn) { io.Copy(io.Discard, conn) }},
		{"parked, quiet", false, 2 * parkAfter, func(conn net.Conn) { io.Copy(io.Discard, conn) }},
		{"parked, begun", false, 2 * parkAfter, chunkedThenWait},
		{"held, quiet", true, 2 * parkAfter, func(conn net.Conn) { io.Copy(io.Discard, conn) }},
		{"held, begun", true, 2 * parkAfter, chunkedThenWait},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x := newScriptedExchange(t, func(n int64, req *http.Request, conn net.Conn) { tc.answer(conn) })
			addr := pollGateway(t, x, time.Minute, tc.bare, nil)
			c, _ := dialDevice(t, addr)
			io.WriteString(c, pingRequest)
			time.Sleep(tc.wait)
			c.Close()
			select {
			case <-x.eof:
			case <-time.After(20 * time.Second):
				t.Fatal("the device hung up; its poll's Exchange connection stayed open")
			}
		})
	}
}

// TestLongPollStrayBytes: a device that sends more while its poll waits
// (its next request, pipelined, or bytes that are no request) gets its
// answer, framed, with "Connection: close", and the connection ends: what
// it sent was read by the check and cannot be served.
func TestLongPollStrayBytes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		bare  bool
		stray string
	}{
		{"parked, pipelined", false, "OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: gw\r\n\r\n"},
		{"parked, garbage", false, "\x00\x01garbage"},
		{"held, pipelined", true, "OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: gw\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newScriptedExchange(t, func(n int64, req *http.Request, conn net.Conn) {
				answerAfter(conn, 3*parkAfter, http.StatusOK, "pong")
			})
			addr := pollGateway(t, x, time.Minute, tc.bare, nil)
			c, br := dialDevice(t, addr)
			io.WriteString(c, pingRequest)
			time.Sleep(3 * parkAfter / 2) // taken from the server
			io.WriteString(c, tc.stray)
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != 200 || string(body) != "pong" || !resp.Close {
				t.Fatalf("the poll's answer: %d %q %v, Connection: close %v", resp.StatusCode, body, err, resp.Close)
			}
			// Closed: EOF, or a reset for the stray bytes left unread.
			if b, err := br.ReadByte(); err == nil || isTimeout(err) {
				t.Errorf("after the answer: %q %v, want the connection closed", b, err)
			}
		})
	}
}

// TestLongPollKeepAlive: a poll answered after it was parked, before and
// after its answer began, leaves the device's connection ready for its
// next request; held, likewise.
func TestLongPollKeepAlive(t *testing.T) {
	for _, tc := range []struct {
		name string
		bare bool
		ping func(conn net.Conn)
	}{
		{"parked, quiet", false, func(conn net.Conn) { answerAfter(conn, 3*parkAfter/2, http.StatusOK, "pong") }},
		{"parked, begun", false, func(conn net.Conn) {
			io.WriteString(conn, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\npon\r\n")
			time.Sleep(3 * parkAfter / 2)
			io.WriteString(conn, "1\r\ng\r\n0\r\n\r\n")
		}},
		{"held, quiet", true, func(conn net.Conn) { answerAfter(conn, 3*parkAfter/2, http.StatusOK, "pong") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newScriptedExchange(t, func(n int64, req *http.Request, conn net.Conn) {
				if strings.Contains(req.URL.RawQuery, "Cmd=Ping") {
					tc.ping(conn)
					return
				}
				answerAfter(conn, 0, http.StatusOK, "folders")
			})
			addr := pollGateway(t, x, time.Minute, tc.bare, nil)
			c, br := dialDevice(t, addr)
			io.WriteString(c, pingRequest)
			if status, body, err := readStatus(t, c, br, 20*time.Second); err != nil || status != 200 || body != "pong" {
				t.Fatalf("Ping: %d %q %v", status, body, err)
			}
			io.WriteString(c, strings.Replace(pingRequest, "Cmd=Ping", "Cmd=FolderSync", 1))
			if status, body, err := readStatus(t, c, br, 20*time.Second); err != nil || body != "folders" {
				t.Fatalf("the next request on the connection: %d %q %v", status, body, err)
			}
		})
	}
}

// TestLongPollRequestAsReverseProxy: a long poll's request reaches Exchange
// with the very headers, path and query an ordinary request's does through
// ReverseProxy: hop-by-hop headers and those the Connection header names
// dropped, "Te: trailers" kept, the device's credentials and forwarding
// headers replaced.
func TestLongPollRequestAsReverseProxy(t *testing.T) {
	type seen struct {
		uri    string
		header http.Header
	}
	got := make(chan seen, 2)
	x := newScriptedExchange(t, func(n int64, req *http.Request, conn net.Conn) {
		got <- seen{req.RequestURI, req.Header.Clone()}
		answerAfter(conn, 0, http.StatusOK, "ok")
	})
	addr := pollGateway(t, x, time.Minute, false, nil)
	headers := "Host: gw\r\nContent-Length: 0\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n" +
		"Te: trailers, deflate\r\nUpgrade: h2c\r\nProxy-Authorization: Basic eA==\r\nAuthorization: Basic YWxpY2U6cA==\r\n" +
		"Proxy-Connection: keep-alive\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Host: evil\r\nForwarded: for=evil\r\n" +
		"X-Ms-PolicyKey: 123\r\nMS-ASProtocolVersion: 16.1\r\nUser-Agent: Apple-iPhone/1\r\nAccept: */*\r\n\r\n"
	var list []seen
	for _, cmd := range []string{"FolderSync", "Ping"} {
		c, br := dialDevice(t, addr)
		io.WriteString(c, "POST /Microsoft-Server-ActiveSync?Cmd="+cmd+"&User=alice&DeviceId=dev1&DeviceType=t HTTP/1.1\r\n"+headers)
		if status, body, err := readStatus(t, c, br, 10*time.Second); err != nil || status != 200 {
			t.Fatalf("%s: %d %q %v", cmd, status, body, err)
		}
		select {
		case s := <-got:
			list = append(list, s)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not reach Exchange", cmd)
		}
	}
	ord, lp := list[0], list[1]
	if want := strings.Replace(ord.uri, "FolderSync", "Ping", 1); lp.uri != want {
		t.Errorf("the long poll went to %q, the ordinary request to %q", lp.uri, ord.uri)
	}
	for _, h := range []http.Header{ord.header, lp.header} {
		if !strings.HasPrefix(h.Get("Authorization"), "Negotiate ") {
			t.Errorf("Authorization %q", h.Get("Authorization"))
		}
		h.Del("Authorization") // a fresh authenticator each time
	}
	if !equalHeaders(ord.header, lp.header) {
		t.Errorf("headers differ:\nReverseProxy: %v\nlong poll:    %v", ord.header, lp.header)
	}
	for _, k := range []string{"X-Hop", "Keep-Alive", "Upgrade", "Proxy-Authorization", "Proxy-Connection", "Forwarded"} {
		if v := lp.header.Get(k); v != "" {
			t.Errorf("%s passed on: %q", k, v)
		}
	}
	if lp.header.Get("Te") != "trailers" || lp.header.Get("X-Forwarded-For") != "127.0.0.1" || lp.header.Get("X-Forwarded-Host") != "gw" ||
		lp.header.Get("X-Ms-Policykey") != "123" {
		t.Errorf("Te %q, X-Forwarded-For %q, X-Forwarded-Host %q, X-MS-PolicyKey %q", lp.header.Get("Te"),
			lp.header.Get("X-Forwarded-For"), lp.header.Get("X-Forwarded-Host"), lp.header.Get("X-Ms-Policykey"))
	}
}

func equalHeaders(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb := b[k]
		if strings.Join(va, "\x00") != strings.Join(vb, "\x00") {
			return false
		}
	}
	return true
}

// TestLongPoll401LongBody (review of issue 29): a 401 whose body is longer
// than what is read of it before the request goes again, and then stops,
// no longer holds the poll: the refused answer's connection is closed, and
// the request goes again with a new ticket.
func TestLongPoll401LongBody(t *testing.T) {
	x := newScriptedExchange(t, func(n int64, req *http.Request, conn net.Conn) {
		if n == 1 {
			time.Sleep(3 * parkAfter / 2) // parked first
			fmt.Fprintf(conn, "HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", 8<<10, strings.Repeat("x", 8<<10))
			io.Copy(io.Discard, conn) // and nothing more
			return
		}
		answerAfter(conn, 0, http.StatusOK, "pong")
	})
	addr := pollGateway(t, x, time.Minute, false, nil)
	c, br := dialDevice(t, addr)
	io.WriteString(c, pingRequest)
	if status, body, err := readStatus(t, c, br, 10*time.Second); err != nil || status != 200 || body != "pong" {
		t.Fatalf("the poll after a long 401: %d %q %v", status, body, err)
	}
}

// TestLongPollExpectContinue (review of issue 29): a device's "Expect:
// 100-continue" does not reach Exchange, whose interim 100 was taken for the
// start of the answer: the poll is parked as any other.
func TestLongPollExpectContinue(t *testing.T) {
	var h *ProxyHandler
	x := newScriptedExchange(t, func(n int64, req *http.Request, conn net.Conn) {
		if req.Header.Get("Expect") != "" {
			io.WriteString(conn, "HTTP/1.1 100 Continue\r\n\r\n")
		}
		answerAfter(conn, 4*parkAfter, http.StatusOK, "pong")
	})
	addr := pollGateway(t, x, time.Minute, false, nil, func(p *ProxyHandler) { h = p })
	c, br := dialDevice(t, addr)
	req := strings.Replace(pingRequest, "Content-Length: 0\r\n", "Content-Length: 7\r\nExpect: 100-continue\r\n", 1)
	io.WriteString(c, req+"<ping/>")
	time.Sleep(5 * parkAfter / 2)
	h.parkMu.Lock()
	taken := len(h.live)
	h.parkMu.Unlock()
	if taken != 1 {
		t.Errorf("%d polls taken from the server, want the one with Expect", taken)
	}
	for {
		status, body, err := readStatus(t, c, br, 10*time.Second)
		if err == nil && status == http.StatusContinue {
			continue // the server's own, to the device
		}
		if err != nil || body != "pong" {
			t.Fatalf("%d %q %v", status, body, err)
		}
		break
	}
}

// TestModifyResponsePanic (review of issue 29): a ModifyResponse hook that
// panics fails its request (502) and frees the user's connection, long poll
// or not: with one connection per user, the user's next request is served.
func TestModifyResponsePanic(t *testing.T) {
	x := newScriptedExchange(t, func(n int64, req *http.Request, conn net.Conn) {
		answerAfter(conn, 0, http.StatusOK, "ok")
	})
	addr := pollGateway(t, x, time.Minute, false, nil, func(p *ProxyHandler) {
		p.Transport = &UserPools{MaxConnsPerUser: 1}
		p.Timeout = 3 * time.Second
		p.ModifyResponse = func(r *http.Response) error {
			if !strings.Contains(r.Request.URL.RawQuery, "Cmd=Sync") {
				panic("a bug of the hook's")
			}
			return nil
		}
	})
	for _, cmd := range []string{"Ping", "FolderSync"} {
		c, br := dialDevice(t, addr)
		io.WriteString(c, strings.Replace(pingRequest, "Cmd=Ping", "Cmd="+cmd, 1))
		if status, _, err := readStatus(t, c, br, 10*time.Second); err != nil || status != http.StatusBadGateway {
			t.Fatalf("%s with a panicking hook: %d %v", cmd, status, err)
		}
	}
	c, br := dialDevice(t, addr)
	io.WriteString(c, strings.Replace(pingRequest, "Cmd=Ping", "Cmd=Sync", 1))
	if status, body, err := readStatus(t, c, br, 10*time.Second); err != nil || status != 200 || body != "ok" {
		t.Fatalf("the user's next request: %d %q %v", status, body, err)
	}
}

// TestHeldPollShutdown (review of issue 29): a poll taken from its server
// but held (its socket cannot be watched) whose answer has not begun is
// ended by the server's shutdown at once (503), as a parked one is; it used
// to wait for Shutdown's deadline.
func TestHeldPollShutdown(t *testing.T) {
	x := newScriptedExchange(t, func(n int64, req *http.Request, conn net.Conn) { io.Copy(io.Discard, conn) })
	var h *ProxyHandler
	var srv *http.Server
	addr := pollGateway(t, x, time.Minute, true, func(s *http.Server) { srv = s }, func(p *ProxyHandler) { h = p })
	c, br := dialDevice(t, addr)
	io.WriteString(c, pingRequest)
	time.Sleep(2 * parkAfter) // taken, then held
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	srv.Shutdown(ctx)
	if err := h.Shutdown(ctx); err != nil {
		t.Errorf("ProxyHandler.Shutdown: %v", err)
	}
	status, _, err := readStatus(t, c, br, 5*time.Second)
	if err != nil || status != http.StatusServiceUnavailable || time.Since(start) > 5*time.Second {
		t.Fatalf("a held poll at shutdown: %d %v after %v", status, err, time.Since(start))
	}
}

// TestLongPollSplitChunk (review of issue 29): a parked answer whose chunk's
// CRLF came apart from its data parks again instead of blocking in the
// chunked reader: the device's hang-up is seen, and Exchange's connection
// closed.
func TestLongPollSplitChunk(t *testing.T) {
	x := newScriptedExchange(t, func(n int64, req *http.Request, conn net.Conn) {
		time.Sleep(3 * parkAfter / 2) // parked first
		io.WriteString(conn, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npong")
		time.Sleep(200 * time.Millisecond)
		io.WriteString(conn, "\r\n")
		io.Copy(io.Discard, conn)
	})
	addr := pollGateway(t, x, time.Minute, false, nil)
	c, _ := dialDevice(t, addr)
	io.WriteString(c, pingRequest)
	time.Sleep(4 * parkAfter)
	c.Close()
	select {
	case <-x.eof:
	case <-time.After(6 * time.Second):
		t.Fatal("the device hung up; its answer's Exchange connection is still held")
	}
}
