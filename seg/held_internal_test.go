package seg

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/segkcd/segkcd/kerberos"
)

// These tests run a ProxyHandler without the lab: a scripted Exchange
// (plain HTTP/1.1 on loopback) behind it, tickets made up (nobody checks
// them here), and devices that write and read raw HTTP/1.1.

// fakeTickets hands out a ticket no KDC issued: enough for a Negotiate
// header, which the scripted Exchange does not check.
type fakeTickets struct{}

func (fakeTickets) AccountTicket(context.Context, *kerberos.Account, string) (*kerberos.Ticket, error) {
	return &kerberos.Ticket{
		Ticket: messages.Ticket{TktVNO: 5, Realm: "CORP.EXAMPLE.TEST",
			SName:   types.NewPrincipalName(nametype.KRB_NT_SRV_INST, "HTTP/mail.corp.example.test"),
			EncPart: types.EncryptedData{EType: 18, KVNO: 1, Cipher: make([]byte, 64)}},
		SessionKey:  types.EncryptionKey{KeyType: 18, KeyValue: make([]byte, 32)},
		Client:      types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, "alice"),
		ClientRealm: "CORP.EXAMPLE.TEST",
		Server:      types.NewPrincipalName(nametype.KRB_NT_SRV_INST, "HTTP/mail.corp.example.test"),
		ServerRealm: "CORP.EXAMPLE.TEST",
		EndTime:     time.Now().Add(time.Hour),
	}, nil
}
func (fakeTickets) InvalidateAccount(string, string) {}

// scriptedExchange answers each request as answer says; n counts requests
// over all connections from 1. eof gets a value each time the gateway
// closes a connection.
type scriptedExchange struct {
	answer func(n int64, req *http.Request, conn net.Conn)
	count  atomic.Int64
	eof    chan struct{}
	url    *url.URL
}

func newScriptedExchange(t *testing.T, answer func(n int64, req *http.Request, conn net.Conn)) *scriptedExchange {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	x := &scriptedExchange{answer: answer, eof: make(chan struct{}, 100)}
	x.url, _ = url.Parse("http://" + ln.Addr().String())
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						x.eof <- struct{}{}
						return
					}
					io.Copy(io.Discard, req.Body)
					x.answer(x.count.Add(1), req, c)
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return x
}

func answerAfter(conn net.Conn, d time.Duration, status int, body string) {
	time.Sleep(d)
	fmt.Fprintf(conn, "HTTP/1.1 %d %s\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s", status, http.StatusText(status), len(body), body)
}

// bareListener hides the connections' sockets, as a PROXY-protocol or
// accounting wrapper of another library's does: polls cannot be parked.
type bareListener struct{ net.Listener }

func (l bareListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return struct{ net.Conn }{c}, nil
}

// pollGateway serves a ProxyHandler in front of x; bare hides the sockets.
func pollGateway(t *testing.T, x *scriptedExchange, longPoll time.Duration, bare bool, srvConf func(*http.Server), hConf ...func(*ProxyHandler)) string {
	t.Helper()
	acct := &kerberos.Account{User: "alice", Name: "alice", SID: "S-1-5-21-1-1101"}
	h := &ProxyHandler{Upstreams: []*Upstream{{URL: x.url, SPN: "HTTP/mail.corp.example.test"}}, Tickets: fakeTickets{},
		Authenticate:    func(*http.Request) (*Identity, error) { return identity(acct, "alice", "test"), nil },
		LongPollTimeout: longPoll, Logger: discardLogger()}
	for _, f := range hConf {
		f(h)
	}
	srv := httptest.NewUnstartedServer(h)
	if bare {
		srv.Listener = bareListener{srv.Listener}
	}
	if srvConf != nil {
		srvConf(srv.Config)
	}
	srv.Start()
	t.Cleanup(func() {
		// As a program shuts down (the server, then the handler): the
		// server's Shutdown also stops its serving of connections given
		// back, which httptest's Close alone would race with (a
		// connection given back as Close waits for the others).
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Config.Shutdown(ctx)
		h.Shutdown(ctx)
		srv.Close()
	})
	return srv.Listener.Addr().String()
}

const pingRequest = "POST /Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceId=dev1&DeviceType=t HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n"

func dialDevice(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func readStatus(t *testing.T, c net.Conn, br *bufio.Reader, within time.Duration) (int, string, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	defer c.SetReadDeadline(time.Time{})
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, "", err
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// TestHeldPollTimeout (issue 27, defect 3): a poll that cannot be parked
// (the listener hides its sockets) ends at LongPollTimeout like a parked
// one; it used to wait for Exchange with no deadline at all.
func TestHeldPollTimeout(t *testing.T) {
	x := newScriptedExchange(t, func(n int64, req *http.Request, conn net.Conn) { time.Sleep(time.Minute) })
	addr := pollGateway(t, x, 1500*time.Millisecond, true, nil)
	c, br := dialDevice(t, addr)
	io.WriteString(c, pingRequest)
	status, _, err := readStatus(t, c, br, 20*time.Second)
	if err != nil || status != http.StatusGatewayTimeout {
		t.Fatalf("held past LongPollTimeout: %d %v", status, err)
	}
}

// TestHeldPollHangUp (issue 27, defect 3): the device hanging up ends a held
// poll, and its Exchange connection is closed, as for a parked one.
func TestHeldPollHangUp(t *testing.T) {
	x := newScriptedExchange(t, func(n int64, req *http.Request, conn net.Conn) { io.Copy(io.Discard, conn) })
	addr := pollGateway(t, x, time.Minute, true, nil)
	c, _ := dialDevice(t, addr)
	io.WriteString(c, pingRequest)
	time.Sleep(2 * parkAfter) // past parkAfter: taken from the server, then held
	c.Close()
	select {
	case <-x.eof:
	case <-time.After(20 * time.Second):
		t.Fatal("the device hung up; its poll's Exchange connection stayed open")
	}
}

// TestParkedRetryDeadline (issue 27, defect 7): a parked poll whose ticket
// Exchange refused is sent again with a new LongPollTimeout; the first
// one's timer used to end it.
func TestParkedRetryDeadline(t *testing.T) {
	const timeout = 4 * time.Second
	x := newScriptedExchange(t, func(n int64, req *http.Request, conn net.Conn) {
		if n == 1 {
			answerAfter(conn, 1500*time.Millisecond, http.StatusUnauthorized, "")
			return
		}
		// Past the first request's deadline, within the second's.
		answerAfter(conn, timeout-1000*time.Millisecond, http.StatusOK, "pong")
	})
	addr := pollGateway(t, x, timeout, false, nil)
	c, br := dialDevice(t, addr)
	io.WriteString(c, pingRequest)
	status, body, err := readStatus(t, c, br, 20*time.Second)
	if err != nil || status != http.StatusOK || body != "pong" {
		t.Fatalf("the retried poll: %d %q %v", status, body, err)
	}
}

// TestRestedConnIdle (issue 27, defect 5): a connection whose parked Ping
// was answered keeps the server's IdleTimeout before the device's next
// request, as any other kept-alive connection; it used to get
// ReadHeaderTimeout. Past IdleTimeout it is closed.
func TestRestedConnIdle(t *testing.T) {
	x := newScriptedExchange(t, func(n int64, req *http.Request, conn net.Conn) {
		if strings.Contains(req.URL.RawQuery, "Cmd=Ping") {
			answerAfter(conn, 1500*time.Millisecond, http.StatusOK, "pong")
			return
		}
		answerAfter(conn, 0, http.StatusOK, "folders")
	})
	addr := pollGateway(t, x, time.Minute, false, func(s *http.Server) {
		s.ReadHeaderTimeout, s.IdleTimeout = 500*time.Millisecond, 3*time.Second
	})
	c, br := dialDevice(t, addr)
	io.WriteString(c, pingRequest)
	if status, body, err := readStatus(t, c, br, 20*time.Second); err != nil || body != "pong" {
		t.Fatalf("Ping: %d %q %v", status, body, err)
	}
	time.Sleep(1500 * time.Millisecond) // idle: past ReadHeaderTimeout, within IdleTimeout
	io.WriteString(c, strings.Replace(pingRequest, "Cmd=Ping", "Cmd=FolderSync", 1))
	if status, body, err := readStatus(t, c, br, 20*time.Second); err != nil || body != "folders" {
		t.Fatalf("the next request after 1.5s idle: %d %q %v", status, body, err)
	}
	// The rule still holds: an idle connection is closed after IdleTimeout.
	c2, br2 := dialDevice(t, addr)
	io.WriteString(c2, pingRequest)
	if _, body, err := readStatus(t, c2, br2, 20*time.Second); err != nil || body != "pong" {
		t.Fatalf("second Ping: %q %v", body, err)
	}
	c2.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := br2.ReadByte(); err != io.EOF {
		t.Errorf("an idle connection past IdleTimeout: %v, want EOF", err)
	}
}

// TestStalledReader (issue 27, defect 8): a device that stops reading its
// answer is cut after WriteTimeout, held or parked, and the answer's
// Exchange connection is closed; it used to hold the writer for good.
func TestStalledReader(t *testing.T) {
	big := strings.Repeat("x", 32<<20)
	for _, cmd := range []string{"FolderSync", "Ping"} {
		t.Run(cmd, func(t *testing.T) {
			x := newScriptedExchange(t, func(n int64, req *http.Request, conn net.Conn) {
				wait := time.Duration(0)
				if cmd == "Ping" {
					wait = 2 * parkAfter // parked first
				}
				answerAfter(conn, wait, http.StatusOK, big)
			})
			addr := pollGateway(t, x, time.Minute, false, nil, func(h *ProxyHandler) { h.WriteTimeout = time.Second })
			c, _ := dialDevice(t, addr)
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetReadBuffer(4 << 10)
			}
			io.WriteString(c, strings.Replace(pingRequest, "Cmd=Ping", "Cmd="+cmd, 1))
			select {
			case <-x.eof:
			case <-time.After(30 * time.Second):
				t.Fatal("a device that stopped reading still holds its answer's Exchange connection")
			}
		})
	}
}
