package park_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/segkcd/segkcd/seg/internal/park"
)

// FuzzWriter: whatever answer the Writer is given (status, a Content-Length
// or none, a header value of any bytes, a body in parts, the start written
// by one Writer and the rest by another after Begun, as when net/http
// began the answer before its connection was taken), net/http's client
// parser reads exactly that answer, and the connection can carry the next
// one exactly when End reports the answer whole. Run with -race by make
// test (the seed corpus) and with -fuzz to search.
func FuzzWriter(f *testing.F) {
	f.Add(200, int64(-1), "text/plain", []byte("hello world"), uint8(3), uint8(0), false, false)
	f.Add(200, int64(11), "text/plain", []byte("hello world"), uint8(4), uint8(5), false, false)
	f.Add(204, int64(-1), "", []byte(""), uint8(0), uint8(0), false, false)
	f.Add(304, int64(5), "x", []byte(""), uint8(0), uint8(0), false, true)
	f.Add(200, int64(20), "a\r\nInjected: 1", []byte("short"), uint8(2), uint8(1), false, false)
	f.Add(503, int64(-1), "", []byte("Service Unavailable\n"), uint8(1), uint8(0), true, true)
	f.Add(200, int64(3), "", []byte("too long"), uint8(0), uint8(0), false, false)
	f.Add(101, int64(-1), "", []byte("x"), uint8(0), uint8(0), false, false)
	f.Add(200, int64(5), "", []byte("hello"), uint8(0), uint8(0), true, false)
	f.Fuzz(func(t *testing.T, status int, cl int64, value string, body []byte, parts, handover uint8, head, closing bool) {
		if status < 100 || status > 999 || len(body) > 1<<16 {
			return
		}
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		type read struct {
			resp *http.Response
			body []byte
			err  error
			next error // reading a second answer after it
		}
		got := make(chan read, 1)
		go func() {
			br := bufio.NewReader(b)
			method := http.MethodPost
			if head {
				method = http.MethodHead
			}
			resp, err := http.ReadResponse(br, &http.Request{Method: method})
			if err != nil {
				io.Copy(io.Discard, b)
				got <- read{err: err}
				return
			}
			rb, err := io.ReadAll(resp.Body)
			_, next := http.ReadResponse(br, nil)
			io.Copy(io.Discard, b)
			got <- read{resp: resp, body: rb, err: err, next: next}
		}()

		w := &park.Writer{Conn: a, Timeout: 5 * time.Second, Head: head, Close: closing}
		w.Header().Set("Content-Type", value)
		if cl >= 0 {
			w.Header().Set("Content-Length", strconv.FormatInt(cl, 10))
		}
		w.WriteHeader(status) // 1xx: not sent
		if status < 200 {
			w.WriteHeader(http.StatusOK) // as the first Write would: a handover needs the head sent
		}
		// The body in parts; after handover parts, a new Writer goes on
		// in the first one's framing.
		step := 1 + len(body)/int(parts%8+1)
		written := int64(0)
		for i, p := 0, body; len(p) > 0; i++ {
			n := min(step, len(p))
			if handover > 0 && i == int(handover%4) {
				if w.Idle() != nil {
					break
				}
				st, cl := effective(status, cl)
				w = &park.Writer{Conn: a, Timeout: 5 * time.Second, Head: head}
				w.Begun(st, cl, written)
			}
			m, err := w.Write(p[:n])
			written += int64(m)
			if err != nil {
				break
			}
			p = p[n:]
		}
		whole := w.End()
		// The pipe carries a second answer only after a whole one.
		if whole && !closing {
			io.WriteString(a, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		}
		a.Close()
		r := <-got
		st, _ := effective(status, cl)
		if r.err != nil && whole {
			t.Fatalf("a whole answer (status %d, length %d, %d body bytes) was not read: %v", status, cl, len(body), r.err)
		}
		if !whole {
			return
		}
		if r.resp.StatusCode != st {
			t.Fatalf("status %d, want %d", r.resp.StatusCode, st)
		}
		if v := r.resp.Header.Get("Content-Type"); v != cleanValue(value) {
			t.Fatalf("a header value %q came as %q", value, v)
		}
		bodyless := head || st == http.StatusNoContent || st == http.StatusNotModified
		if !bodyless && !bytes.Equal(r.body, body) {
			t.Fatalf("body %q, want %q", r.body, body)
		}
		if r.resp.Close != closing {
			t.Fatalf("Connection: close is %v, want %v", r.resp.Close, closing)
		}
		if !closing && r.next != nil {
			t.Fatalf("the answer after a whole one was not read: %v", r.next)
		}
	})
}

// effective is the status and length the Writer sends for what it was
// given: 1xx answers are not sent (the first write sends 200).
func effective(status int, cl int64) (int, int64) {
	if status < 200 {
		status = http.StatusOK
	}
	return status, cl
}

// cleanValue is a header value as net/http's Header.Write sends it and its
// parser returns it.
func cleanValue(v string) string {
	h := http.Header{}
	h.Set("Content-Type", v)
	var buf bytes.Buffer
	h.Write(&buf)
	resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(bytes.NewReader([]byte("HTTP/1.1 200 OK\r\n")), &buf, bytes.NewReader([]byte("\r\n")))), nil)
	if err != nil {
		return "" // the Writer drops what no client can read
	}
	return resp.Header.Get("Content-Type")
}
