package seg

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segkcd/segkcd/internal/proxyproto"
	"github.com/segkcd/segkcd/seg/internal/park"
)

// serveRemoteAddr serves, through a ProxyProtocolListener trusting
// trusted, the RemoteAddr of each request.
func serveRemoteAddr(t *testing.T, trusted ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &ProxyProtocolListener{Listener: ln, HeaderTimeout: time.Second}
	for _, p := range trusted {
		l.Trusted = append(l.Trusted, netip.MustParsePrefix(p))
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, sys := w.(http.Hijacker)
		io.WriteString(w, r.RemoteAddr+fmt.Sprintf(" hijackable=%v", sys))
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func askThrough(t *testing.T, addr string, header []byte) (string, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	// The header and the request in one write: nothing past the header may
	// be lost.
	c.Write(append(header, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"...))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	b, _ := io.ReadAll(resp.Body)
	return string(b), nil
}

func TestProxyProtocolListener(t *testing.T) {
	addr := serveRemoteAddr(t, "127.0.0.0/8")
	h := proxyproto.Header{Source: netip.MustParseAddrPort("192.0.2.7:51234"), Dest: netip.MustParseAddrPort("198.51.100.1:443")}
	for _, hdr := range [][]byte{h.AppendV1(nil), h.AppendV2(nil)} {
		if got, err := askThrough(t, addr, hdr); err != nil || !strings.HasPrefix(got, "192.0.2.7:51234 ") {
			t.Errorf("%q: %q %v", hdr, got, err)
		}
	}
	if got, err := askThrough(t, addr, proxyproto.Header{Local: true}.AppendV2(nil)); err != nil || !strings.HasPrefix(got, "127.0.0.1:") {
		t.Errorf("LOCAL: %q %v", got, err)
	}
	// No header, or a broken one: no request is served (net/http answers
	// the failed first read with a bare 400 and closes).
	for _, hdr := range []string{"", "PROXY TCP4 192.0.2.7\r\n"} {
		if got, err := askThrough(t, addr, []byte(hdr)); err == nil && strings.Contains(got, "hijackable") {
			t.Errorf("%q: served %q", hdr, got)
		}
	}
	// A peer outside Trusted is closed unread.
	other := serveRemoteAddr(t, "10.0.0.0/8")
	if got, err := askThrough(t, other, h.AppendV2(nil)); err == nil {
		t.Errorf("untrusted peer answered: %q", got)
	}
	// A silent balancer connection costs HeaderTimeout, then is closed.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	io.Copy(io.Discard, c)
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("a silent connection was held %v", d)
	}
}

// TestProxiedConnParks: a connection from the balancer keeps its socket for
// the poller, through TLS as the server wraps it.
func TestProxiedConnParks(t *testing.T) {
	a, b := tcpPair(t)
	defer a.Close()
	defer b.Close()
	a.Write(proxyproto.Header{Source: netip.MustParseAddrPort("192.0.2.7:1"), Dest: netip.MustParseAddrPort("192.0.2.1:443")}.AppendV2(nil))
	pc := &proxiedConn{Conn: b, timeout: time.Second}
	if pc.RemoteAddr().String() != "192.0.2.7:1" {
		t.Fatalf("RemoteAddr %v", pc.RemoteAddr())
	}
	var c net.Conn = pc
	if _, ok := c.(syscall.Conn); !ok {
		t.Error("not a syscall.Conn")
	}
	if !pollerSupported {
		return
	}
	var pl park.Poller
	w, err := pl.Watch(context.Background(), tls.Server(c, &tls.Config{}), nil, time.Time{}, func(park.Reason) {})
	if err != nil {
		t.Fatalf("no socket for the poller: %v", err)
	}
	w.Stop()
}

func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

// TestProxyProtocolHAProxy: Debian's HAProxy, an independent writer of the
// protocol, in TCP mode with send-proxy and send-proxy-v2; the client's
// address (curl from 127.0.0.9) is what the handler sees.
func TestProxyProtocolHAProxy(t *testing.T) {
	for _, tool := range []string{"haproxy", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing: scripts/lab deps installs it", tool)
			}
			t.Skipf("%s is missing", tool)
		}
	}
	backend := serveRemoteAddr(t, "127.0.0.0/8")
	for _, send := range []string{"send-proxy", "send-proxy-v2"} {
		front := freeLoopback(t)
		cfg := fmt.Sprintf("defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n"+
			"frontend f\n  bind %s\n  default_backend b\nbackend b\n  server s %s %s\n", front, backend, send)
		path := filepath.Join(t.TempDir(), "haproxy.cfg")
		os.WriteFile(path, []byte(cfg), 0o600)
		hap := exec.Command("haproxy", "-db", "-f", path)
		hap.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		var out strings.Builder
		hap.Stdout, hap.Stderr = &out, &out
		if err := hap.Start(); err != nil {
			t.Fatal(err)
		}
		var got []byte
		var err error
		for i := 0; i < 50; i++ {
			got, err = exec.Command("curl", "-sS", "--max-time", "3", "--interface", "127.0.0.9", "http://"+front+"/").CombinedOutput()
			if err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		hap.Process.Kill()
		hap.Wait()
		if err != nil || !strings.HasPrefix(string(got), "127.0.0.9:") {
			t.Errorf("%s: %q %v\nhaproxy: %s", send, got, err, out.String())
		}
	}
}

func freeLoopback(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
