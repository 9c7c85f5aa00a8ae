package proxyproto_test

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/segkcd/segkcd/internal/proxyproto"
)

var (
	v4 = proxyproto.Header{Source: netip.MustParseAddrPort("192.0.2.7:51234"), Dest: netip.MustParseAddrPort("198.51.100.1:443")}
	v6 = proxyproto.Header{Source: netip.MustParseAddrPort("[2001:db8::7]:51234"), Dest: netip.MustParseAddrPort("[2001:db8::1]:443")}
)

// TestRoundTrip: both versions, both families, and the byte after the
// header is left in the reader.
func TestRoundTrip(t *testing.T) {
	for _, h := range []proxyproto.Header{v4, v6, {Local: true}} {
		for _, enc := range []func([]byte) []byte{h.AppendV1, h.AppendV2} {
			b := append(enc(nil), "\x16rest"...)
			r := bytes.NewReader(b)
			got, err := proxyproto.Read(r)
			if err != nil || got != h {
				t.Errorf("%q: %+v %v, want %+v", b, got, err, h)
			}
			if rest, _ := io.ReadAll(r); string(rest) != "\x16rest" {
				t.Errorf("%q: read past the header, left %q", b, rest)
			}
		}
	}
}

// TestNeverReadsPast: through a reader that would hand over everything it
// has (bufio), nothing after the header is consumed, whatever its form.
func TestNeverReadsPast(t *testing.T) {
	for _, s := range []string{"PROXY TCP4 192.0.2.7 198.51.100.1 51234 443\r\nGET / HTTP/1.1\r\n", "PROXY UNKNOWN\r\nX"} {
		src := strings.NewReader(s)
		if _, err := proxyproto.Read(src); err != nil {
			t.Fatal(err)
		}
		rest, _ := io.ReadAll(src)
		if !strings.HasSuffix(s, string(rest)) || len(rest) == 0 {
			t.Errorf("%q: left %q", s, rest)
		}
	}
}

func TestRefused(t *testing.T) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\n\r\n",
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
		"PROXY TCP4 192.0.2.7 198.51.100.1 51234 443\n",                       // no CR
		"PROXY TCP4 2001:db8::7 198.51.100.1 51234 443\r\n",                   // family mismatch
		"PROXY TCP4 192.0.2.7 198.51.100.1 051234 443\r\n",                    // leading zero
		"PROXY TCP4 192.0.2.7 198.51.100.1 65536 443\r\n",                     // port range
		"PROXY TCP6 fe80::1%eth0 2001:db8::1 1 443\r\n",                       // zone
		"PROXY TCP4 192.0.2.7 198.51.100.1 51234\r\n",                         // field missing
		"PROXY " + strings.Repeat("A", 120) + "\r\n",                          // too long
		"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + strings.Repeat("\x00", 12), // version 3
		"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x04\x00\x00\x00\x00",              // short IPv4 block
		"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff",                              // over 4 KiB
		"\r\n\r\n\x00\r\nQUIT\n\x2f\x11\x00\x00",                              // command 15
	} {
		if _, err := proxyproto.Read(strings.NewReader(s)); !errors.Is(err, proxyproto.ErrMalformed) {
			t.Errorf("%q: %v", s, err)
		}
	}
	for _, s := range []string{"", "PROXY", "PROXY TCP4 192.0.2.7", "\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\x00"} {
		if _, err := proxyproto.Read(strings.NewReader(s)); err == nil || errors.Is(err, proxyproto.ErrMalformed) {
			t.Errorf("%q cut short: %v", s, err)
		}
	}
}

// FuzzRead: no input crashes Read, reads past what it says is the header,
// or yields a PROXY header without two valid addresses of one family.
func FuzzRead(f *testing.F) {
	for _, h := range []proxyproto.Header{v4, v6, {Local: true}} {
		f.Add(h.AppendV1(nil))
		f.Add(h.AppendV2(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		h, err := proxyproto.Read(r)
		if err != nil {
			return
		}
		used := len(b) - r.Len()
		if used > 16+4096 {
			t.Fatalf("read %d bytes", used)
		}
		if !h.Local && (!h.Source.IsValid() || !h.Dest.IsValid() || h.Source.Addr().Is4() != h.Dest.Addr().Is4() && !bytes.HasPrefix(b, []byte("\r\n"))) {
			t.Fatalf("%+v from %q", h, b[:used])
		}
	})
}
