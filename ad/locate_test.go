package ad

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"
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
