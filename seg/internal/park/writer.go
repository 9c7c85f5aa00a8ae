package park

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Writer writes an HTTP/1.1 answer on a connection taken from its server,
// framed as net/http's server frames it: Content-Length when the answer
// gives one, else chunked. Its buffer is taken while bytes move and given
// back when the answer waits (Idle). Trailers are not sent (ActiveSync has
// none). It is an http.ResponseWriter and an http.Flusher.
type Writer struct {
	// Conn is the device's connection.
	Conn net.Conn
	// Timeout bounds each write (zero: none).
	Timeout time.Duration
	// Head: the request was HEAD, so the answer has no body.
	Head bool
	// Close: the connection ends with this answer ("Connection: close").
	// It counts until the headers are written.
	Close bool

	bw      *bufio.Writer
	header  http.Header
	wrote   bool // the status line and headers went
	noBody  bool
	chunked bool
	left    int64 // of a Content-Length body, -1 when none
	err     error
}

var writers sync.Pool // *bufio.Writer, 4 KiB

// Header is the answer's header, until WriteHeader.
func (w *Writer) Header() http.Header {
	if w.header == nil {
		w.header = http.Header{}
	}
	return w.header
}

func (w *Writer) writer() *bufio.Writer {
	if w.bw == nil {
		bw, _ := writers.Get().(*bufio.Writer)
		if bw == nil {
			bw = bufio.NewWriterSize(nil, 4<<10)
		}
		bw.Reset(deadlineWriter{w.Conn, w.Timeout})
		w.bw = bw
	}
	return w.bw
}

// deadlineWriter bounds each write by a deadline from its start.
type deadlineWriter struct {
	conn    net.Conn
	timeout time.Duration
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	if d.timeout > 0 {
		d.conn.SetWriteDeadline(time.Now().Add(d.timeout))
	}
	return d.conn.Write(p)
}

// Begun says that another writer (net/http's) sent the status line and
// headers of an answer with this status and Content-Length (-1: none), and
// written bytes of its body: the answer goes on in that framing. The other
// writer's "Connection" header stands, whatever Close says.
func (w *Writer) Begun(status int, contentLength, written int64) {
	w.wrote = true
	w.noBody = w.Head || bodyless(status)
	w.left = -1
	if contentLength >= 0 {
		w.left = contentLength - written
	}
	w.chunked = !w.noBody && w.left < 0
}

func bodyless(status int) bool {
	return status == http.StatusNoContent || status == http.StatusNotModified
}

// WriteHeader sends the status line and headers (1xx answers are not
// passed on).
func (w *Writer) WriteHeader(code int) {
	if w.wrote || code < 200 {
		return
	}
	w.wrote = true
	h := w.Header()
	h.Del("Transfer-Encoding")
	h.Del("Trailer")
	w.left = -1
	if cl := h.Get("Content-Length"); cl != "" {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || n < 0 {
			h.Del("Content-Length")
		} else {
			w.left = n
		}
	}
	w.noBody = w.Head || bodyless(code)
	if !w.noBody && w.left < 0 {
		w.chunked = true
		h.Set("Transfer-Encoding", "chunked")
	}
	if w.Close {
		h.Set("Connection", "close")
	} else {
		h.Del("Connection")
	}
	if _, ok := h["Date"]; !ok {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	for k, vv := range h {
		if !validName(k) {
			delete(h, k)
			continue
		}
		for _, v := range vv {
			if !validValue(v) {
				delete(h, k) // what net/http's client would refuse to read
				break
			}
		}
	}
	bw := w.writer()
	fmt.Fprintf(bw, "HTTP/1.1 %03d %s\r\n", code, statusText(code))
	if err := h.Write(bw); err != nil { // sorted; CR and LF in values made spaces
		w.err = err
	}
	bw.WriteString("\r\n")
}

func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return t
	}
	return "Error"
}

// Write writes a part of the body (chunked: one chunk).
func (w *Writer) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.noBody {
		return 0, http.ErrBodyNotAllowed
	}
	if len(p) == 0 {
		return 0, nil
	}
	bw := w.writer()
	if w.chunked {
		fmt.Fprintf(bw, "%x\r\n", len(p))
		n, err := bw.Write(p)
		bw.WriteString("\r\n")
		w.err = err
		return n, err
	}
	short := false
	if int64(len(p)) > w.left {
		p, short = p[:w.left], true
	}
	n, err := bw.Write(p)
	w.left -= int64(n)
	if err == nil && short {
		err = http.ErrContentLength
	}
	w.err = err
	return n, err
}

// FlushError sends what is buffered (http.ResponseController's Flush).
func (w *Writer) FlushError() error {
	if w.bw == nil || w.err != nil {
		return w.err
	}
	w.err = w.bw.Flush()
	return w.err
}

// Flush implements http.Flusher.
func (w *Writer) Flush() { w.FlushError() }

// Idle flushes and gives the buffer back, while the answer waits.
func (w *Writer) Idle() error {
	err := w.FlushError()
	w.dropBuffer()
	return err
}

// Abandon gives the buffer back, unflushed: the answer is cut.
func (w *Writer) Abandon() { w.dropBuffer() }

func (w *Writer) dropBuffer() {
	if w.bw != nil {
		w.bw.Reset(nil)
		writers.Put(w.bw)
		w.bw = nil
	}
}

// End finishes the answer and reports whether it went whole, so that the
// connection can carry the device's next request.
func (w *Writer) End() bool {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.chunked && w.err == nil {
		_, w.err = io.WriteString(w.writer(), "0\r\n\r\n")
	}
	w.Idle()
	return w.err == nil && (w.noBody || w.chunked || w.left == 0)
}

// validName reports whether a header name is an RFC 9110 token.
func validName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validValue reports whether a header value holds no control characters
// but tabs (CR and LF, which Header.Write makes spaces, aside).
func validValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' && c != '\r' && c != '\n' || c == 0x7f {
			return false
		}
	}
	return true
}
