package certname_test

import (
	"encoding/asn1"
	"reflect"
	"testing"

	"github.com/segkcd/segkcd/internal/certname"
)

func TestUPNRoundTrip(t *testing.T) {
	for _, upn := range []string{"alice@corp.example.test", "\u212aelly@corp.example.test", "x"} {
		gn, err := certname.MarshalUPN(upn)
		if err != nil {
			t.Fatal(err)
		}
		email, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 1, Bytes: []byte("a@b")})
		san, err := certname.SANExtension(email, gn)
		if err != nil {
			t.Fatal(err)
		}
		got, err := certname.ParseUPNs(san)
		if err != nil || !reflect.DeepEqual(got, []string{upn}) {
			t.Errorf("%q: %q %v", upn, got, err)
		}
	}
}

func TestParseUPNsRefuses(t *testing.T) {
	for name, der := range map[string][]byte{
		"not DER":          {0x30, 0x05, 1},
		"trailing data":    append(mustSAN(t, "a@b"), 0),
		"value not UTF8":   mustRaw(t, 0x30, mustRaw(t, 0xa0, append(mustOID(t), mustRaw(t, 0xa0, mustRaw(t, 0x16, []byte("a@b")))...))),
		"value not [0]":    mustRaw(t, 0x30, mustRaw(t, 0xa0, append(mustOID(t), mustRaw(t, 0x0c, []byte("a@b"))...))),
		"invalid UTF-8":    mustRaw(t, 0x30, mustRaw(t, 0xa0, append(mustOID(t), mustRaw(t, 0xa0, mustRaw(t, 0x0c, []byte{0xff}))...))),
		"bad OID in other": mustRaw(t, 0x30, mustRaw(t, 0xa0, []byte{0x06, 0x00})),
	} {
		if upns, err := certname.ParseUPNs(der); err == nil {
			t.Errorf("%s: %q", name, upns)
		}
	}
}

func mustSAN(t *testing.T, upn string) []byte {
	gn, err := certname.MarshalUPN(upn)
	if err != nil {
		t.Fatal(err)
	}
	san, err := certname.SANExtension(gn)
	if err != nil {
		t.Fatal(err)
	}
	return san
}

func mustOID(t *testing.T) []byte {
	b, err := asn1.Marshal(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mustRaw wraps b in a DER tag (short form lengths only).
func mustRaw(t *testing.T, tag byte, b []byte) []byte {
	if len(b) > 127 {
		t.Fatal("too long")
	}
	return append([]byte{tag, byte(len(b))}, b...)
}

// FuzzParseUPNs: any extension value parses or is refused; never a panic,
// and every UPN found is valid UTF-8 that round-trips.
func FuzzParseUPNs(f *testing.F) {
	gn, _ := certname.MarshalUPN("alice@corp.example.test")
	san, _ := certname.SANExtension(gn)
	f.Add(san)
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		upns, err := certname.ParseUPNs(der)
		if err != nil {
			return
		}
		for _, u := range upns {
			gn, err := certname.MarshalUPN(u)
			if err != nil {
				t.Fatal(err)
			}
			san, _ := certname.SANExtension(gn)
			again, err := certname.ParseUPNs(san)
			if err != nil || len(again) != 1 || again[0] != u {
				t.Fatalf("%q does not round-trip: %q %v", u, again, err)
			}
		}
	})
}
