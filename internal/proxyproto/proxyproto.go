// Package proxyproto reads the header of the PROXY protocol (versions 1 and
// 2, as HAProxy's proxy-protocol.txt specifies them), by which a load
// balancer that passes a TCP connection through tells the server the
// client's address. It reads exactly the header's bytes and never more, so
// that the connection can be handed on as it is (to TLS, or to the epoll
// poller that parks long polls).
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// Header is what a PROXY protocol header says about a connection.
type Header struct {
	// Local is true for a connection the balancer makes on its own behalf
	// (version 2 LOCAL, version 1 UNKNOWN, or an address family other than
	// TCP over IPv4 or IPv6): Source and Dest are then unset, and the
	// connection's own addresses stand.
	Local bool
	// Source is the client's address and port, Dest the address and port
	// the client connected to.
	Source, Dest netip.AddrPort
}

// ErrMalformed is matched by every error for bytes that are not a PROXY
// protocol header.
var ErrMalformed = errors.New("proxyproto: not a PROXY protocol header")

// sigV2 starts every version 2 header.
var sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")

const (
	maxV1 = 107       // the longest version 1 line, CRLF included
	maxV2 = 16 + 4096 // the longest version 2 header read (the address block and TLVs bounded to 4 KiB)
)

// Read reads one header from r, and no byte past it. Errors for what is not
// a header match ErrMalformed; r's own errors (a timeout, EOF) are returned
// as they come (io.ErrUnexpectedEOF for a header cut short).
func Read(r io.Reader) (Header, error) {
	// Both versions are longer than 15 bytes ("PROXY UNKNOWN\r\n" is the
	// shortest), so the first 8 can be read at once.
	var b [maxV1]byte
	if _, err := io.ReadFull(r, b[:8]); err != nil {
		return Header{}, err
	}
	switch {
	case bytes.Equal(b[:8], sigV2[:8]):
		return readV2(r, b[:8])
	case string(b[:6]) == "PROXY ":
		// Version 1 has no length: read up to the LF byte by byte, so
		// that nothing after the header is taken from r.
		n := 8
		for b[n-1] != '\n' {
			if n == maxV1 {
				return Header{}, fmt.Errorf("%w: version 1 line longer than %d bytes", ErrMalformed, maxV1)
			}
			if _, err := io.ReadFull(r, b[n:n+1]); err != nil {
				return Header{}, unexpected(err)
			}
			n++
		}
		return parseV1(b[:n])
	}
	return Header{}, fmt.Errorf("%w: neither version 1 nor version 2", ErrMalformed)
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func parseV1(line []byte) (Header, error) {
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return Header{}, fmt.Errorf("%w: version 1 line does not end in CRLF", ErrMalformed)
	}
	f := strings.Split(string(line[6:len(line)-2]), " ")
	switch {
	case len(f) >= 1 && f[0] == "UNKNOWN":
		return Header{Local: true}, nil // the rest of the line is ignored
	case len(f) != 5 || f[0] != "TCP4" && f[0] != "TCP6":
		return Header{}, fmt.Errorf("%w: version 1 line is not TCP4, TCP6 or UNKNOWN with four fields", ErrMalformed)
	}
	src, err1 := v1Addr(f[1], f[3], f[0] == "TCP4")
	dst, err2 := v1Addr(f[2], f[4], f[0] == "TCP4")
	if err := errors.Join(err1, err2); err != nil {
		return Header{}, err
	}
	return Header{Source: src, Dest: dst}, nil
}

// v1Addr reads an address and a port of a version 1 line, in the forms the
// specification allows only: dotted quad for TCP4, no zone, a decimal port
// without leading zeros or sign.
func v1Addr(addr, port string, v4 bool) (netip.AddrPort, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Is4() != v4 || a.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("%w: version 1 address is not an IPv4 or IPv6 address of its family", ErrMalformed)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || port[0] == '+' || len(port) > 1 && port[0] == '0' {
		return netip.AddrPort{}, fmt.Errorf("%w: version 1 port is not a decimal number below 65536", ErrMalformed)
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}

func readV2(r io.Reader, first []byte) (Header, error) {
	var hdr [16]byte
	copy(hdr[:], first)
	if _, err := io.ReadFull(r, hdr[8:]); err != nil {
		return Header{}, unexpected(err)
	}
	if !bytes.Equal(hdr[:12], sigV2) {
		return Header{}, fmt.Errorf("%w: version 2 signature", ErrMalformed)
	}
	verCmd, fam := hdr[12], hdr[13]
	n := int(binary.BigEndian.Uint16(hdr[14:16]))
	if verCmd>>4 != 2 {
		return Header{}, fmt.Errorf("%w: version 2 header of version %d", ErrMalformed, verCmd>>4)
	}
	if 16+n > maxV2 {
		return Header{}, fmt.Errorf("%w: version 2 header of %d bytes, more than the %d read", ErrMalformed, n, maxV2-16)
	}
	rest := make([]byte, n)
	if _, err := io.ReadFull(r, rest); err != nil {
		return Header{}, unexpected(err)
	}
	switch verCmd & 0xf {
	case 0: // LOCAL: the balancer's own connection (a health check)
		return Header{Local: true}, nil
	case 1: // PROXY
	default:
		return Header{}, fmt.Errorf("%w: version 2 command %d", ErrMalformed, verCmd&0xf)
	}
	switch fam {
	case 0x11: // TCP over IPv4
		return v2Addrs(rest, 4)
	case 0x21: // TCP over IPv6
		return v2Addrs(rest, 16)
	}
	// UNSPEC, UDP, UNIX sockets: the specification says to accept the
	// connection and use its own addresses.
	return Header{Local: true}, nil
}

// v2Addrs reads a version 2 address block of addresses of size bytes:
// source, destination, source port, destination port.
func v2Addrs(b []byte, size int) (Header, error) {
	if len(b) < 2*size+4 {
		return Header{}, fmt.Errorf("%w: version 2 address block of %d bytes for %d-byte addresses", ErrMalformed, len(b), size)
	}
	src, _ := netip.AddrFromSlice(b[:size])
	dst, _ := netip.AddrFromSlice(b[size : 2*size])
	ports := b[2*size:]
	return Header{Source: netip.AddrPortFrom(src, binary.BigEndian.Uint16(ports[0:2])),
		Dest: netip.AddrPortFrom(dst, binary.BigEndian.Uint16(ports[2:4]))}, nil
}

// proxied reports whether h can be written as a PROXY header: two valid
// addresses of one family (else it is written as LOCAL or UNKNOWN).
func (h Header) proxied() bool {
	return !h.Local && h.Source.IsValid() && h.Dest.IsValid() && h.Source.Addr().Is4() == h.Dest.Addr().Is4() &&
		h.Source.Addr().Zone() == "" && h.Dest.Addr().Zone() == ""
}

// AppendV1 appends h as a version 1 line (for tests and for balancers
// written in Go).
func (h Header) AppendV1(b []byte) []byte {
	if !h.proxied() {
		return append(b, "PROXY UNKNOWN\r\n"...)
	}
	fam := "TCP6"
	if h.Source.Addr().Is4() {
		fam = "TCP4"
	}
	return fmt.Appendf(b, "PROXY %s %s %s %d %d\r\n", fam, h.Source.Addr(), h.Dest.Addr(), h.Source.Port(), h.Dest.Port())
}

// AppendV2 appends h as a version 2 header.
func (h Header) AppendV2(b []byte) []byte {
	b = append(b, sigV2...)
	if !h.proxied() {
		return append(b, 0x20, 0x00, 0, 0)
	}
	if h.Source.Addr().Is4() {
		b = append(b, 0x21, 0x11, 0, 12)
		s, d := h.Source.Addr().As4(), h.Dest.Addr().As4()
		b = append(append(b, s[:]...), d[:]...)
	} else {
		b = append(b, 0x21, 0x21, 0, 36)
		s, d := h.Source.Addr().As16(), h.Dest.Addr().As16()
		b = append(append(b, s[:]...), d[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, h.Source.Port())
	return binary.BigEndian.AppendUint16(b, h.Dest.Port())
}
