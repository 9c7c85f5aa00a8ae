package seg_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"os/exec"
	"regexp"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segkcd/segkcd/internal/testinfra/eastest"
	"github.com/segkcd/segkcd/internal/testinfra/testpki"
	"github.com/segkcd/segkcd/seg"
)

// testParking: long polls that wait are parked (their connections taken
// from the server and put on the poller, no goroutine of the handler's
// running for them) and answered right, whether Exchange's answer had not
// begun or had begun and then waited; the device's connection goes back to
// the server and carries its next request, authenticated by its
// certificate as before; a device that hangs up, a newer Ping,
// LongPollTimeout and the server's shutdown each end a parked poll as they
// end a held one.
func testParking(t *testing.T, r *rig) {
	t.Run("quiet answer", func(t *testing.T) { testParkedQuiet(t, r) })
	t.Run("begun answer", func(t *testing.T) { testParkedBegun(t, r) })
	t.Run("device hangs up", func(t *testing.T) { testParkedHangUp(t, r) })
	t.Run("many, no goroutines", func(t *testing.T) { testParkedMany(t, r) })
	t.Run("newer Ping", func(t *testing.T) { testParkedNewerPing(t, r) })
	t.Run("timeout", func(t *testing.T) { testParkedTimeout(t, r) })
	t.Run("shutdown", func(t *testing.T) { testParkedShutdown(t, r) })
	t.Run("curl", func(t *testing.T) { testParkedCurl(t, r) })
	t.Run("pipelined", func(t *testing.T) { testParkedPipelined(t, r) })
}

// reuse records whether a device's requests found their connection kept.
type reuse struct {
	mu     sync.Mutex
	reused []bool
}

func (u *reuse) trace(ctx context.Context) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		u.mu.Lock()
		u.reused = append(u.reused, i.Reused)
		u.mu.Unlock()
	}})
}

func (u *reuse) last() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reused) > 0 && u.reused[len(u.reused)-1]
}

// waitMetric polls a gauge of the rig's registry until it is want.
func waitMetric(t *testing.T, r *rig, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for metricValue(t, r, name, nil) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s is %v, want %v", name, metricValue(t, r, name, nil), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// handlerGoroutines counts the goroutines that run the gateway's code for
// a request: those with a frame in one of seg's own files (not its
// internal packages, whose poller waits for every parked poll at once),
// except the loops of servers (http.Server.Serve: the listener of given
// back connections). It goes by file, not by function names, so that a
// rename cannot make it count nothing.
func handlerGoroutines(t *testing.T) int {
	t.Helper()
	return len(handlerStacks())
}

var segFrame = regexp.MustCompile(`/seg/([a-z0-9_]+)\.go:[0-9]+`)

// inSeg reports whether a goroutine's stack has a frame in a product file
// of seg's (the tests' own goroutines are not the handler's).
func inSeg(stack string) bool {
	for _, m := range segFrame.FindAllStringSubmatch(stack, -1) {
		if !strings.HasSuffix(m[1], "_test") {
			return true
		}
	}
	return false
}

func handlerStacks() []string {
	var b strings.Builder
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	var list []string
	for _, g := range strings.Split(b.String(), "\n\n") {
		if inSeg(g) && !strings.Contains(g, "net/http.(*Server).Serve(") {
			list = append(list, g)
		}
	}
	return list
}

func testParkedQuiet(t *testing.T, r *rig) {
	c := r.deviceFor(t, "alice")
	var u reuse
	// A first request opens the device's connection.
	if a := post(t, c, r.easURL("FolderSync", "alice", "PARKPHONE1"), "<x/>"); a.status != 200 {
		t.Fatalf("FolderSync: %d", a.status)
	}
	req, _ := http.NewRequestWithContext(u.trace(context.Background()), http.MethodPost,
		r.easURL("Ping", "alice", "PARKPHONE1"), strings.NewReader("<ping/>"))
	req.Header.Set(eastest.WaitHeader, "2500ms")
	got := make(chan answer, 1)
	start := time.Now()
	go func() { got <- do(t, c, req) }()
	waitMetric(t, r, "seg_long_polls_parked", 1)
	if n := handlerGoroutines(t); n != 0 {
		t.Errorf("%d goroutines in the handler while the Ping is parked", n)
	}
	if n := metricValue(t, r, "seg_long_polls_active", nil); n != 1 {
		t.Errorf("seg_long_polls_active while parked: %v", n)
	}
	a := <-got
	if a.status != 200 || !strings.HasPrefix(a.body, "alice\n7 ") || a.user != "alice" || time.Since(start) < 2500*time.Millisecond {
		t.Fatalf("parked Ping: %d %q as %q after %v", a.status, a.body, a.user, time.Since(start))
	}
	if !u.last() {
		t.Error("the Ping did not go on the device's kept-alive connection")
	}
	waitMetric(t, r, "seg_long_polls_parked", 0)
	// The connection went back to the server: the next request uses it,
	// and the certificate on it still names alice.
	req, _ = http.NewRequestWithContext(u.trace(context.Background()), http.MethodPost,
		r.easURL("Sync", "alice", "PARKPHONE1"), strings.NewReader("<sync/>"))
	if a := do(t, c, req); a.status != 200 || a.user != "alice" || !strings.HasPrefix(a.body, "alice\n") {
		t.Fatalf("the request after the parked Ping: %d as %q: %q", a.status, a.user, a.body)
	}
	if !u.last() {
		t.Error("the request after the parked Ping did not reuse the connection it was answered on")
	}
	if !logHas(r, "cmd=Ping", "device=PARKPHONE1", "status=200") || logHas(r, "device=PARKPHONE1", "ended=") {
		t.Error("the parked Ping's log line is missing, or says it was cut")
	}
}

func testParkedBegun(t *testing.T, r *rig) {
	c := r.deviceFor(t, "alice")
	var u reuse
	req, _ := http.NewRequestWithContext(u.trace(context.Background()), http.MethodPost,
		r.easURL("Ping", "alice", "PARKPHONE2"), strings.NewReader("<ping/>"))
	req.Header.Set(eastest.HoldHeader, "2500ms")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "alice\n" {
		t.Fatalf("first line %q %v", line, err)
	}
	waitMetric(t, r, "seg_long_polls_parked", 1) // after parkAfter without a part
	if n := handlerGoroutines(t); n != 0 {
		t.Errorf("%d goroutines in the handler while the answer waits", n)
	}
	rest, err := io.ReadAll(br)
	resp.Body.Close()
	if err != nil || string(rest) != "done\n" {
		t.Fatalf("the rest of the answer: %q %v (a framing error shows here)", rest, err)
	}
	// The chunked answer was ended whole: net/http framed its start and
	// the poll its end, and the connection carries the next request only
	// if both agreed.
	req, _ = http.NewRequestWithContext(u.trace(context.Background()), http.MethodPost,
		r.easURL("Sync", "alice", "PARKPHONE2"), strings.NewReader("<sync/>"))
	if a := do(t, c, req); a.status != 200 || a.user != "alice" {
		t.Fatalf("the request after: %d as %q", a.status, a.user)
	}
	if !u.last() {
		t.Error("the request after the parked answer did not reuse its connection")
	}
	waitMetric(t, r, "seg_long_polls_parked", 0)
}

func testParkedHangUp(t *testing.T, r *rig) {
	c := r.deviceFor(t, "alice")
	gone := countLines(r, "device=PARKPHONE3", `ended="device closed the connection"`)
	for _, how := range []string{eastest.WaitHeader, eastest.HoldHeader} {
		before := r.exchange.Stats().Cancelled
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, r.easURL("Ping", "alice", "PARKPHONE3"), strings.NewReader("<ping/>"))
		req.Header.Set(how, "10m")
		done := make(chan struct{})
		go func() {
			defer close(done)
			if resp, err := c.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
		waitMetric(t, r, "seg_long_polls_parked", 1)
		cancel() // the phone gives up: its connection closes
		<-done
		deadline := time.Now().Add(5 * time.Second)
		for r.exchange.Stats().Cancelled == before {
			if time.Now().After(deadline) {
				t.Fatalf("%s: Exchange's side of the parked Ping was not cancelled", how)
			}
			time.Sleep(20 * time.Millisecond)
		}
		waitMetric(t, r, "seg_long_polls_parked", 0)
		waitMetric(t, r, "seg_long_polls_active", 0)
	}
	if n := countLines(r, "device=PARKPHONE3", `ended="device closed the connection"`) - gone; n != 2 {
		t.Errorf("%d log lines say the device went away, want 2", n)
	}
}

// testParkedMany: 100 quiet Pings of 10 users, all parked, none with a
// goroutine of the handler's; each answered for its own user.
func testParkedMany(t *testing.T, r *rig) {
	const n = 100
	users := isoNames()[:10]
	certs := map[string]*testpki.Issued{}
	for _, u := range users {
		cert, err := r.cert(t, u+"@"+r.lab.DNSDomain, "", u)
		if err != nil {
			t.Fatal(err)
		}
		certs[u] = cert
	}
	type result struct {
		want string
		a    answer
	}
	results := make(chan result, n)
	for i := range n {
		user := users[i%len(users)]
		req, _ := http.NewRequest(http.MethodPost, r.easURL("Ping", user, "MANY"+strings.Repeat("X", i%7)+string(rune('A'+i/7))), strings.NewReader("<ping/>"))
		req.Header.Set(eastest.WaitHeader, "3s")
		c := r.device(t, certs[user]) // a phone: a connection of its own
		go func() { results <- result{user, do(t, c, req)} }()
	}
	waitMetric(t, r, "seg_long_polls_parked", n)
	if g := handlerGoroutines(t); g != 0 {
		for _, s := range handlerStacks() {
			t.Log(s)
		}
		t.Errorf("%d goroutines in the handler with %d Pings parked", g, n)
	}
	for range n {
		res := <-results
		if res.a.status != 200 || res.a.user != res.want || !strings.HasPrefix(res.a.body, res.want+"\n") {
			t.Errorf("a parked Ping of %s: %d as %q: %q", res.want, res.a.status, res.a.user, res.a.body)
		}
	}
	waitMetric(t, r, "seg_long_polls_parked", 0)
}

func testParkedNewerPing(t *testing.T, r *rig) {
	c := r.deviceFor(t, "alice")
	ping := func() chan answer {
		req, _ := http.NewRequest(http.MethodPost, r.easURL("Ping", "alice", "PARKPHONE4"), strings.NewReader("<ping/>"))
		req.Header.Set(eastest.WaitHeader, "3s")
		ch := make(chan answer, 1)
		go func() { ch <- do(t, c, req) }()
		return ch
	}
	older := ping()
	waitMetric(t, r, "seg_long_polls_parked", 1)
	newer := ping()
	select {
	case a := <-older:
		if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "" {
			t.Errorf("the older parked Ping: %d %q", a.status, a.body)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a newer Ping of the device did not end the parked one")
	}
	if a := <-newer; a.status != 200 || a.user != "alice" {
		t.Errorf("the newer Ping: %d as %q", a.status, a.user)
	}
}

func testParkedTimeout(t *testing.T, r *rig) {
	h := r.handlerWith(func(h *seg.ProxyHandler) { h.LongPollTimeout = 1500 * time.Millisecond })
	srv := r.serve(t, h)
	c := r.deviceFor(t, "alice")
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceType=T&DeviceId=PARKPHONE5",
		strings.NewReader("<ping/>"))
	req.Header.Set(eastest.WaitHeader, "1m")
	start := time.Now()
	a := do(t, c, req)
	if took := time.Since(start); a.status != http.StatusGatewayTimeout || took < 1500*time.Millisecond || took > 4*time.Second {
		t.Errorf("a parked Ping past LongPollTimeout: %d after %v", a.status, took)
	}
}

func testParkedShutdown(t *testing.T, r *rig) {
	h := r.handlerWith(func(*seg.ProxyHandler) {})
	srv := r.serve(t, h)
	cert, err := r.cert(t, "alice@"+r.lab.DNSDomain, "", "alice")
	if err != nil {
		t.Fatal(err)
	}
	type ended struct {
		status int
		body   string
		close  bool
		err    error
	}
	ping := func(device, how, d string) chan ended {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceType=T&DeviceId="+device,
			strings.NewReader("<ping/>"))
		req.Header.Set(how, d)
		got := make(chan ended, 1)
		go func() {
			c := r.device(t, cert)
			resp, err := c.Do(req)
			if err != nil {
				got <- ended{err: err}
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			got <- ended{resp.StatusCode, string(b), resp.Close, err}
		}()
		return got
	}
	quiet := ping("PARKPHONE6", eastest.WaitHeader, "1m")
	begun := ping("PARKPHONE7", eastest.HoldHeader, "3s")
	time.Sleep(2 * time.Second) // both parked after parkAfter
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Config.Shutdown(ctx); err != nil {
		t.Errorf("http.Server.Shutdown: %v", err)
	}
	// The server's Shutdown ends the quiet one: 503, and the device is
	// told to go elsewhere.
	select {
	case a := <-quiet:
		if a.status != http.StatusServiceUnavailable || !a.close || a.err != nil {
			t.Errorf("a parked Ping not begun at shutdown: %d, connection closed after it: %v, %v", a.status, a.close, a.err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a parked Ping not begun was not ended by the server's Shutdown")
	}
	// The handler's Shutdown waits for the begun one, which ends whole.
	if err := h.Shutdown(ctx); err != nil {
		t.Errorf("ProxyHandler.Shutdown: %v", err)
	}
	if waited := time.Since(start); waited < 500*time.Millisecond {
		t.Errorf("ProxyHandler.Shutdown returned after %v, before the begun Ping's end", waited)
	}
	select {
	case a := <-begun:
		if a.status != 200 || a.body != "alice\ndone\n" || a.err != nil {
			t.Errorf("a parked Ping whose answer had begun, across the shutdown: %d %q %v", a.status, a.body, a.err)
		}
	case <-time.After(2 * time.Second):
		t.Error("the begun Ping did not end")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the shutdown took %v", took)
	}
	// With a deadline too short, what is left is cut.
	srv2 := r.serve(t, h)
	c := r.device(t, cert)
	req, _ := http.NewRequest(http.MethodPost, srv2.URL+"/Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceType=T&DeviceId=PARKPHONE8",
		strings.NewReader("<ping/>"))
	req.Header.Set(eastest.HoldHeader, "1m")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // parked after parkAfter
	short, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	srv2.Config.Shutdown(short)
	if err := h.Shutdown(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ProxyHandler.Shutdown past its deadline: %v", err)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("a begun Ping left at the deadline was not cut")
	}
	resp.Body.Close()
}

// testParkedCurl: curl, an HTTP client of its own, reads a parked quiet
// answer and a parked begun (chunked) one, and sends its next request on
// the connection each came on (num_connects 0).
func testParkedCurl(t *testing.T, r *rig) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("curl is not installed: %v", err) // make test installs it
	}
	cert, err := r.cert(t, "alice@"+r.lab.DNSDomain, "", "alice")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, _ := testpki.WriteFile(dir, "alice.crt", cert.CertPEM)
	keyFile, _ := testpki.WriteFile(dir, "alice.key", cert.KeyPEM)
	caFile, _ := testpki.WriteFile(dir, "ca.pem", r.ca.PEM)
	for _, how := range []string{eastest.WaitHeader, eastest.HoldHeader} {
		args := []string{"-sS", "--cacert", caFile, "--cert", certFile, "--key", keyFile,
			"-X", "POST", "-d", "<ping/>", "-H", how + ": 1500ms", "-w", "\n[%{http_code} %{num_connects}]\n",
			r.easURL("Ping", "alice", "CURLPARK"),
			"--next", "-sS", "--cacert", caFile, "--cert", certFile, "--key", keyFile,
			"-X", "POST", "-d", "<sync/>", "-w", "\n[%{http_code} %{num_connects}]\n",
			r.easURL("Sync", "alice", "CURLPARK")}
		out, err := exec.Command("curl", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: curl: %v\n%s", how, err, out)
		}
		want := "alice\n7 "
		if how == eastest.HoldHeader {
			want = "alice\ndone\n"
		}
		s := string(out)
		if !strings.HasPrefix(s, want) || !strings.Contains(s, "[200 1]\nalice\n") || !strings.HasSuffix(s, "[200 0]\n") {
			t.Errorf("%s: curl saw:\n%s", how, s)
		}
	}
}

// testParkedPipelined: a device that sends more while its Ping is parked
// (pipelining, which phones do not do) gets its answer, framed, with
// "Connection: close", and the connection ends: the bytes it sent were
// read by the poll's check and cannot be served.
func testParkedPipelined(t *testing.T, r *rig) {
	cert, err := r.cert(t, "alice@"+r.lab.DNSDomain, "", "alice")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(r.gateway.URL, "https://"),
		&tls.Config{RootCAs: r.ca.Pool, Certificates: []tls.Certificate{cert.TLS}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	path := strings.TrimPrefix(r.easURL("Ping", "alice", "PARKPIPE"), r.gateway.URL)
	io.WriteString(conn, "POST "+path+" HTTP/1.1\r\nHost: gw\r\nContent-Length: 7\r\n"+eastest.WaitHeader+": 2s\r\n\r\n<ping/>")
	time.Sleep(1500 * time.Millisecond) // parked
	io.WriteString(conn, "OPTIONS "+path+" HTTP/1.1\r\nHost: gw\r\n\r\n")
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(string(body), "alice\n") || !resp.Close {
		t.Fatalf("the parked Ping's answer: %d %q %v, Connection: close %v", resp.StatusCode, body, err, resp.Close)
	}
	if rest, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the answer: %q %v, want the connection closed", rest, err)
	}
}
