package seg_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segkcd/segkcd/seg"
)

// connUsers is a server that records which users each connection carried.
type connUsers struct {
	mu    sync.Mutex
	conns map[net.Conn]map[string]bool
	open  int
}

func newConnUsers(t *testing.T) (*httptest.Server, *connUsers) {
	cu := &connUsers{conns: map[net.Conn]map[string]bool{}}
	type key struct{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := r.Context().Value(key{}).(net.Conn)
		cu.mu.Lock()
		cu.conns[c][r.Header.Get("X-User")] = true
		cu.mu.Unlock()
		io.WriteString(w, "ok")
	}))
	srv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		cu.mu.Lock()
		cu.conns[c] = map[string]bool{}
		cu.mu.Unlock()
		return context.WithValue(ctx, key{}, c)
	}
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		cu.mu.Lock()
		defer cu.mu.Unlock()
		switch s {
		case http.StateNew:
			cu.open++
		case http.StateClosed, http.StateHijacked:
			cu.open--
		}
	}
	srv.EnableHTTP2 = true // offered; the pools must still speak HTTP/1.1, one user a connection
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, cu
}

func TestUserPoolsKeepUsersApart(t *testing.T) {
	srv, cu := newConnUsers(t)
	pools := &seg.UserPools{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		for _, user := range []string{"alice", "bob", "carol"} {
			wg.Add(1)
			go func(user string) {
				defer wg.Done()
				for j := 0; j < 20; j++ {
					req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
					req.Header.Set("X-User", user)
					resp, err := pools.ForUser(user).RoundTrip(req)
					if err != nil {
						t.Error(err)
						return
					}
					if resp.ProtoMajor != 1 {
						t.Errorf("upstream spoke %s", resp.Proto)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}(user)
		}
	}
	wg.Wait()
	cu.mu.Lock()
	for c, users := range cu.conns {
		if len(users) > 1 {
			t.Errorf("connection %v carried %v", c.RemoteAddr(), users)
		}
	}
	cu.mu.Unlock()
	if n := pools.UsersForTest(); n != 3 {
		t.Errorf("%d pools", n)
	}
}

func TestUserPoolsBounded(t *testing.T) {
	srv, cu := newConnUsers(t)
	pools := &seg.UserPools{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig, MaxUsers: 2, IdleTimeout: 200 * time.Millisecond}
	get := func(user string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		req.Header.Set("X-User", user)
		resp, err := pools.ForUser(user).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for _, u := range []string{"a", "b", "c", "d"} {
		get(u)
	}
	if n := pools.UsersForTest(); n != 2 {
		t.Errorf("%d pools with MaxUsers 2", n)
	}
	// The pools of users who left are closed with their connections.
	time.Sleep(300 * time.Millisecond)
	get("e") // the sweep runs on use
	deadline := time.Now().Add(2 * time.Second)
	for {
		cu.mu.Lock()
		open := cu.open
		cu.mu.Unlock()
		if open <= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d upstream connections still open", open)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := pools.UsersForTest(); n != 1 {
		t.Errorf("%d pools after the idle timeout", n)
	}
}

// TestUserPoolsServerClosedIdle: the server closes a kept-alive connection
// while it is idle (IIS does after two minutes); the next request, a POST
// that must not be sent twice, finds it closed before sending and goes over
// a new connection.
func TestUserPoolsServerClosedIdle(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	srv.Config.IdleTimeout = 50 * time.Millisecond
	srv.StartTLS()
	defer srv.Close()
	pools := &seg.UserPools{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig}
	rt := pools.ForUser("alice")
	for i, body := range []string{"", "first", "second"} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) != body {
			t.Errorf("request %d: %q", i, got)
		}
		time.Sleep(150 * time.Millisecond) // the server closes the idle connection
	}
}

// TestUserPoolsEarlyAnswer: the server answers before it has read a
// streamed body (a refusal) and never reads the rest; the answer reaches
// the caller and nothing waits for the other side.
func TestUserPoolsEarlyAnswer(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, "no")
	}))
	defer srv.Close()
	pools := &seg.UserPools{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig}
	pr, pw := io.Pipe()
	go func() { // 64 MiB that the server will not read
		chunk := make([]byte, 1<<20)
		for i := 0; i < 64; i++ {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, srv.URL, pr)
	done := make(chan error, 1)
	go func() {
		resp, err := pools.ForUser("alice").RoundTrip(req)
		if err == nil {
			if resp.StatusCode != http.StatusUnauthorized {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil && !strings.Contains(err.Error(), "reset") && !strings.Contains(err.Error(), "broken pipe") {
			t.Errorf("early answer: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the early answer and the unread body waited for each other")
	}
	pr.CloseWithError(io.ErrClosedPipe)
}

// smuggler is a TLS upstream that answers a connection's first request with
// an 8 KiB answer followed, in the same TLS record, by a whole second answer
// nobody asked for, and every later request on any connection with "good".
func smuggler(t *testing.T) (url string, pools *seg.UserPools, conns *int32) {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS() // for its certificate and client configuration
	ts.Listener.Close()
	// Full-size records, as IIS writes them (Go's server starts small).
	conf := ts.TLS.Clone()
	conf.DynamicRecordSizingDisabled = true
	ln, err := tls.Listen("tcp", "127.0.0.1:0", conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); ts.Close() })
	var n int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			first := atomic.AddInt32(&n, 1) == 1
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for i := 0; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					if first && i == 0 {
						body := strings.Repeat("x", 8192)
						c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 8192\r\n\r\n" + body +
							"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"))
						continue
					}
					c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood"))
				}
			}()
		}
	}()
	return "https://" + ln.Addr().String(), &seg.UserPools{TLSClientConfig: ts.Client().Transport.(*http.Transport).TLSClientConfig}, &n
}

// TestUserPoolsNoDesync: a connection whose answer is followed by bytes
// nobody asked for (left in TLS's own buffer, where neither our reader nor
// a peek at the socket sees them) is never used again: the next request is
// answered by the server, not by what it smuggled.
func TestUserPoolsNoDesync(t *testing.T) {
	url, pools, conns := smuggler(t)
	defer func() { t.Logf("connections: %d", atomic.LoadInt32(conns)) }()
	rt := pools.ForUser("S-1-5-21-1-1")
	for i, want := range []string{strings.Repeat("x", 8192), "good", "good"} {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		// Read as ReverseProxy copies, 32 KiB at a time: the body's last
		// part comes straight from TLS, which keeps what follows it.
		var got []byte
		buf := make([]byte, 32<<10)
		for {
			n, err := resp.Body.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		resp.Body.Close()
		if string(got) != want {
			t.Fatalf("request %d was answered %q: the connection is out of step", i, got[:min(len(got), 16)])
		}
	}
}

// TestUserPoolsHeaderBound: an upstream whose headers never end is cut off
// at MaxResponseHeaderBytes, not read into memory without end.
func TestUserPoolsHeaderBound(t *testing.T) {
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS()
	srv.Listener.Close()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv.TLS)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ln.Close(); srv.Close() }()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		http.ReadRequest(bufio.NewReader(c))
		c.Write([]byte("HTTP/1.1 200 OK\r\n"))
		line := []byte("X-Filler: " + strings.Repeat("y", 1000) + "\r\n")
		for i := 0; i < 20000; i++ { // 20 MB of headers
			if _, err := c.Write(line); err != nil {
				return
			}
		}
	}()
	pools := &seg.UserPools{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig, MaxResponseHeaderBytes: 64 << 10}
	req, _ := http.NewRequest(http.MethodGet, "https://"+ln.Addr().String(), nil)
	resp, err := pools.ForUser("S-1-5-21-1-1").RoundTrip(req)
	if err == nil {
		resp.Body.Close()
		t.Fatal("20 MB of headers were taken")
	}
	if !strings.Contains(err.Error(), "headers") {
		t.Errorf("error: %v", err)
	}
}

// TestUserPoolsDialPacing (issue 27, defect 8): when an upstream is down,
// every user's request does not dial it: after a failure the host's dials
// pause (jittered, doubling), and at most MaxDialsPerHost are open at once.
func TestUserPoolsDialPacing(t *testing.T) {
	// Exchange as the pools see it: one host, which the dialer sends to a
	// port that refuses (Exchange restarting) or to one that serves (back).
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	refusing := ln.Addr().String()
	ln.Close()
	serving := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		return ln.Addr().String()
	}
	var target atomic.Value
	target.Store(refusing)
	var dials, open, most atomic.Int32
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, target.Load().(string))
	}
	pools := &seg.UserPools{MaxDialsPerHost: 4, DialBackoff: 4 * time.Second,
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			dials.Add(1)
			n := open.Add(1)
			defer open.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(20 * time.Millisecond)
			return dial(ctx, network, a)
		}}
	getFrom := func(p *seg.UserPools, user string) error {
		req, _ := http.NewRequest(http.MethodGet, "http://exchange.test/", nil)
		resp, err := p.ForUser(user).RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() { defer wg.Done(); getFrom(pools, fmt.Sprintf("user%d", i)) }()
	}
	wg.Wait()
	if m := most.Load(); m > 4 {
		t.Errorf("%d dials at once, bound 4", m)
	}
	if n := dials.Load(); n > 8 {
		t.Errorf("200 users' requests to a host that refuses cost %d dials", n)
	}
	// In the pause: refused without dialing, as a dial error.
	before := dials.Load()
	err := getFrom(pools, "late")
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" || dials.Load() != before {
		t.Errorf("during the pause: %v, %d dials", err, dials.Load()-before)
	}
	// The host is back: after the pause, one dial succeeds and the pause ends.
	target.Store(serving())
	time.Sleep(4200 * time.Millisecond) // the pause (2-4 s) is over
	for i := range 20 {
		if err := getFrom(pools, fmt.Sprintf("back%d", i)); err != nil {
			t.Fatalf("after the host came back: %v", err)
		}
	}
	// A pause about to end is waited out: an Exchange back in a moment
	// costs a short wait, not a 502.
	target.Store(refusing)
	short := &seg.UserPools{DialBackoff: 300 * time.Millisecond, DialContext: dial}
	if err := getFrom(short, "first"); err == nil {
		t.Fatal("a closed port answered")
	}
	target.Store(serving())
	if err := getFrom(short, "second"); err != nil {
		t.Errorf("right after a short pause began: %v", err)
	}
}
