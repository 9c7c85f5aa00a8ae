package proxyproto_test

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"

	"github.com/segkcd/segkcd/internal/proxyproto"
)

// A balancer's header, then the client's first bytes: Read takes the header
// and leaves the rest.
func Example() {
	h := proxyproto.Header{Source: netip.MustParseAddrPort("192.0.2.7:51234"), Dest: netip.MustParseAddrPort("198.51.100.1:443")}
	conn := bytes.NewReader(append(h.AppendV2(nil), "\x16\x03\x01"...))
	got, err := proxyproto.Read(conn)
	if err != nil {
		panic(err)
	}
	rest, _ := io.ReadAll(conn)
	fmt.Println(got.Source, len(rest))
	// Output: 192.0.2.7:51234 3
}
