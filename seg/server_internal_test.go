package seg

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestPendingConnsShed: connections that send nothing past the bound are
// closed oldest first, and a real client still gets through at once.
func TestPendingConnsShed(t *testing.T) {
	srv := shedServer(t, 10)
	var silent []net.Conn
	for range 30 {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
		time.Sleep(2 * time.Millisecond) // accepted in this order
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(srv.URL)
	if err != nil {
		t.Fatalf("a real client behind 30 silent connections: %v", err)
	}
	resp.Body.Close()
	closed := 0
	for i, c := range silent {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			closed++
		} else if i < 15 {
			t.Errorf("silent connection %d (of the oldest) still open", i)
		}
	}
	if closed < 20 {
		t.Errorf("%d of 30 silent connections closed, want at least 20 (bound 10)", closed)
	}
}

// TestPendingConnsShedIdle (review of issue 27): one cheap request, then
// silence, does not escape the bound: idle connections are counted too.
func TestPendingConnsShedIdle(t *testing.T) {
	srv := shedServer(t, 10)
	var idle []net.Conn
	for range 30 {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	time.Sleep(100 * time.Millisecond)
	open := 0
	for _, c := range idle {
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			open++
		}
	}
	if open > 10 {
		t.Errorf("%d of 30 idle connections still open, bound 10", open)
	}
}

// shedServer serves "ok" with NewServer's shedding of connections that
// serve no request, at most max of them.
func shedServer(t *testing.T, max int) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	p := &pendingConns{max: max}
	srv.Config.ConnState = p.track
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}
