package ad

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeSRV answers SRV lookups from a table, as a domain's DNS would.
type fakeSRV map[string][]*net.SRV

func (f fakeSRV) LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error) {
	key := "_" + service + "._" + proto + "." + name
	if r, ok := f[key]; ok {
		return key, r, nil
	}
	return "", nil, &net.DNSError{Err: "no such host", Name: key, IsNotFound: true}
}

// TestLocatorOrder: the site's DCs first, then the domain's, each once;
// within the site, by priority.
func TestLocatorOrder(t *testing.T) {
	dns := fakeSRV{
		"_ldap._tcp.dc._msdcs.corp.example.com": {
			{Target: "dc3.corp.example.com.", Port: 389, Priority: 0, Weight: 100},
			{Target: "dc1.corp.example.com.", Port: 389, Priority: 0, Weight: 100},
			{Target: "dc9.corp.example.com.", Port: 389, Priority: 10, Weight: 100},
		},
		"_ldap._tcp.Paris._sites.dc._msdcs.corp.example.com": {
			{Target: "dc1.corp.example.com.", Port: 389, Priority: 5, Weight: 0},
			{Target: "dc2.corp.example.com.", Port: 389, Priority: 0, Weight: 0},
		},
	}
	l := &Locator{Domain: "corp.example.com", Site: "Paris", Resolver: dns}
	got, err := l.DCs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[0] != "dc2.corp.example.com:389" || got[1] != "dc1.corp.example.com:389" ||
		got[3] != "dc9.corp.example.com:389" || !slices.Contains(got, "dc3.corp.example.com:389") {
		t.Errorf("order: %v", got)
	}
	// No site: the domain's only. No record at all: ErrNoDC.
	l.Site = ""
	if got, _ := l.DCs(context.Background()); len(got) != 3 || got[2] != "dc9.corp.example.com:389" {
		t.Errorf("without a site: %v", got)
	}
	l.Domain = "other.example.com"
	if _, err := l.DCs(context.Background()); !errors.Is(err, ErrNoDC) {
		t.Errorf("no records: %v", err)
	}
}

// TestOrderSRVWeights: RFC 2782's draw: a record is picked with the share
// of its weight; one of weight 0 only after all weighted ones.
func TestOrderSRVWeights(t *testing.T) {
	srvs := []*net.SRV{{Target: "a", Weight: 0}, {Target: "b", Weight: 10}, {Target: "c", Weight: 30}}
	firsts := map[string]int{}
	for draw := 0; draw < 40; draw++ {
		d := draw
		out := orderSRV(srvs, func(n int) int { r := d % n; d = 0; return r })
		firsts[out[0].Target]++
		if out[2].Target != "a" {
			t.Fatalf("weight 0 before a weighted record: %v", out)
		}
	}
	if firsts["b"] != 10 || firsts["c"] != 30 {
		t.Errorf("first picks over 40 draws: %v, want b 10, c 30", firsts)
	}
}

// TestDialErrorNamesEveryDC: no DC reachable: one typed error naming
// each, matching ErrNoDC and each failure.
func TestDialErrorNamesEveryDC(t *testing.T) {
	dead := func() string {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		defer ln.Close()
		return "ldaps://" + ln.Addr().String()
	}
	a, b := dead(), dead()
	_, err := Dial(context.Background(), Config{URL: a, URLs: []string{b}})
	var de *DialError
	if !errors.As(err, &de) || !errors.Is(err, ErrNoDC) || len(de.Tried) != 2 || de.Tried[0].URL != a || de.Tried[1].URL != b {
		t.Fatalf("%v", err)
	}
	var op *net.OpError
	if !errors.As(err, &op) {
		t.Errorf("the failures are not reachable through errors.As: %v", err)
	}
	if _, err := Dial(context.Background(), Config{URL: "http://x", URLs: []string{b}}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("a malformed URL is a configuration error, not a dead DC: %v", err)
	}
}

// tcpDNS serves DNS over TCP on loopback: answer turns a query into its
// reply (nil: hang up). It returns the address and a counter of queries.
func tcpDNS(t *testing.T, answer func(q []byte) []byte) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					var l [2]byte
					if _, err := io.ReadFull(c, l[:]); err != nil {
						return
					}
					q := make([]byte, binary.BigEndian.Uint16(l[:]))
					if _, err := io.ReadFull(c, q); err != nil {
						return
					}
					n.Add(1)
					r := answer(q)
					if r == nil {
						return
					}
					c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(r))))
					c.Write(r)
				}
			}()
		}
	}()
	return ln.Addr().String(), &n
}

// servfail is the reply SERVFAIL to q.
func servfail(q []byte) []byte {
	r := append([]byte(nil), q...)
	r[2] |= 0x80                   // a response
	r[3] = r[3]&0xf0 | 2           // SERVFAIL
	copy(r[6:12], make([]byte, 6)) // no answers
	return r
}

// srvAnswer is a reply to q (one SRV question) with one record naming
// target on port.
func srvAnswer(target string, port uint16) func(q []byte) []byte {
	return func(q []byte) []byte {
		r := append([]byte(nil), q...)
		r[2] |= 0x84 // a response, authoritative
		r[3] &= 0xf0
		binary.BigEndian.PutUint16(r[6:], 1)  // one answer
		binary.BigEndian.PutUint16(r[8:], 0)  // no authority
		binary.BigEndian.PutUint16(r[10:], 0) // no additional (drop an EDNS OPT)
		// Keep the question only: cut what follows it.
		i := 12
		for r[i] != 0 {
			i += int(r[i]) + 1
		}
		r = r[:i+5]
		var rdata []byte
		rdata = binary.BigEndian.AppendUint16(rdata, 0)   // priority
		rdata = binary.BigEndian.AppendUint16(rdata, 100) // weight
		rdata = binary.BigEndian.AppendUint16(rdata, port)
		for _, label := range strings.Split(target, ".") {
			rdata = append(append(rdata, byte(len(label))), label...)
		}
		rdata = append(rdata, 0)
		r = append(r, 0xc0, 12)                  // the question's name
		r = binary.BigEndian.AppendUint16(r, 33) // SRV
		r = binary.BigEndian.AppendUint16(r, 1)  // IN
		r = binary.BigEndian.AppendUint32(r, 60)
		r = binary.BigEndian.AppendUint16(r, uint16(len(rdata)))
		return append(r, rdata...)
	}
}

// TestDNSResolverFailsOver: beside a good server, one that refuses
// connections, one that answers SERVFAIL and one that hangs up are passed
// over: every lookup is answered (the resolver's second attempt goes to
// the next server).
func TestDNSResolverFailsOver(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	refused := ln.Addr().String()
	ln.Close()
	bad, badN := tcpDNS(t, servfail)
	hang, hangN := tcpDNS(t, func([]byte) []byte { return nil })
	good, goodN := tcpDNS(t, srvAnswer("dc2.corp.example.test", 389))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, first := range []string{refused, bad, hang} {
		res := DNSResolver(first, good)
		for i := range 4 {
			_, srvs, err := res.LookupSRV(ctx, "ldap", "tcp", "dc._msdcs.corp.example.test.")
			if err != nil || len(srvs) != 1 || srvs[0].Target != "dc2.corp.example.test." || srvs[0].Port != 389 {
				t.Fatalf("lookup %d with %s first: %v %v", i, first, srvs, err)
			}
		}
	}
	if goodN.Load() != 12 || badN.Load() == 0 || hangN.Load() == 0 {
		t.Fatalf("good server asked %d times, SERVFAIL server %d, hanging one %d", goodN.Load(), badN.Load(), hangN.Load())
	}
	if _, _, err := DNSResolver().LookupSRV(ctx, "ldap", "tcp", "x.test."); err == nil {
		t.Fatal("a resolver without servers answered")
	}
}

// TestSameHost: host names compare as DNS does, ASCII case only.
func TestSameHost(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"DC1.Corp.Example.TEST", "dc1.corp.example.test", true},
		{"dc1.corp.example.test.", "dc1.corp.example.test", true},
		{"\u212ady.corp.example.test", "ky.corp.example.test", false}, // Kelvin sign
		{"dc1.corp.example.test\x00", "dc1.corp.example.test", false},
		{"dc1", "dc2", false},
	} {
		if got := sameHost(c.a, c.b); got != c.want {
			t.Errorf("sameHost(%q, %q) = %v", c.a, c.b, got)
		}
	}
}
