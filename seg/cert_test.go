package seg_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/segkcd/segkcd/internal/testinfra/testpki"
	"github.com/segkcd/segkcd/seg"
)

func TestUPNRoundTrip(t *testing.T) {
	for _, upn := range []string{"alice@corp.example.test", "\u212aelly@corp.example.test", "x"} {
		gn, err := seg.MarshalUPN(upn)
		if err != nil {
			t.Fatal(err)
		}
		email, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 1, Bytes: []byte("a@b")})
		san, err := seg.SANExtension(email, gn)
		if err != nil {
			t.Fatal(err)
		}
		got, err := seg.ParseUPNs(san)
		if err != nil || !reflect.DeepEqual(got, []string{upn}) {
			t.Errorf("%q: %q %v", upn, got, err)
		}
	}
	// A certificate made by x509 with the extension is read the same.
	ca, err := testpki.New("t")
	if err != nil {
		t.Fatal(err)
	}
	dev, err := ca.Device("bob@corp.example.test", "bob.mail@corp.example.test", "Bob")
	if err != nil {
		t.Fatal(err)
	}
	if len(dev.Cert.EmailAddresses) != 1 || dev.Cert.EmailAddresses[0] != "bob.mail@corp.example.test" {
		t.Errorf("x509 reads the e-mail SAN as %q", dev.Cert.EmailAddresses)
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
		if upns, err := seg.ParseUPNs(der); err == nil {
			t.Errorf("%s: %q", name, upns)
		}
	}
}

func mustSAN(t *testing.T, upn string) []byte {
	gn, err := seg.MarshalUPN(upn)
	if err != nil {
		t.Fatal(err)
	}
	san, err := seg.SANExtension(gn)
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
	gn, _ := seg.MarshalUPN("alice@corp.example.test")
	san, _ := seg.SANExtension(gn)
	f.Add(san)
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		upns, err := seg.ParseUPNs(der)
		if err != nil {
			return
		}
		for _, u := range upns {
			gn, err := seg.MarshalUPN(u)
			if err != nil {
				t.Fatal(err)
			}
			san, _ := seg.SANExtension(gn)
			again, err := seg.ParseUPNs(san)
			if err != nil || len(again) != 1 || again[0] != u {
				t.Fatalf("%q does not round-trip: %q %v", u, again, err)
			}
		}
	})
}

// verifiedRequest is a request as the TLS server hands it over after
// verifying the device's chain.
func verifiedRequest(cert *x509.Certificate, ca *x509.Certificate) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/Microsoft-Server-ActiveSync", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}, VerifiedChains: [][]*x509.Certificate{{cert, ca}}}
	return r
}

func TestCertificateAuth(t *testing.T) {
	ca, err := testpki.New("device CA")
	if err != nil {
		t.Fatal(err)
	}
	names := seg.Names{Realm: "CORP.EXAMPLE.TEST", Suffixes: []string{"example.com"}, NetBIOS: "CORP"}
	full, _ := ca.Device("alice@example.com", "alice.mail@corp.example.test", "Alice CN")
	for _, tc := range []struct {
		sources []seg.NameSource
		want    string
	}{
		{nil, "alice"},
		{[]seg.NameSource{seg.FromEmail, seg.FromUPN}, "alice.mail"},
		{[]seg.NameSource{seg.FromCommonName}, "Alice CN"}, // sAMAccountNames may hold spaces
	} {
		a := &seg.CertificateAuth{Sources: tc.sources, Names: names}
		id, err := a.Authenticate(verifiedRequest(full.Cert, ca.Cert))
		if err != nil || id.User != tc.want || id.Method != "certificate" {
			t.Errorf("%v: %+v %v", tc.sources, id, err)
		}
	}
	a := &seg.CertificateAuth{Names: names}
	// No certificate, and a certificate the TLS layer did not verify.
	if _, err := a.Authenticate(httptest.NewRequest(http.MethodPost, "/", nil)); !errors.Is(err, seg.ErrNoCredentials) {
		t.Errorf("no certificate: %v", err)
	}
	r := verifiedRequest(full.Cert, ca.Cert)
	r.TLS.VerifiedChains = nil
	if _, err := a.Authenticate(r); !errors.Is(err, seg.ErrBadCredentials) {
		t.Errorf("unverified: %v", err)
	}
	// A UPN of a foreign domain.
	foreign, _ := ca.Device("alice@elsewhere.test", "", "")
	if _, err := a.Authenticate(verifiedRequest(foreign.Cert, ca.Cert)); !errors.Is(err, seg.ErrBadCredentials) || !errors.Is(err, seg.ErrBadName) {
		t.Errorf("foreign UPN: %v", err)
	}
}

func TestCRL(t *testing.T) {
	ca, _ := testpki.New("device CA")
	other, _ := testpki.New("other CA")
	dev, _ := ca.Device("alice@corp.example.test", "", "")
	dir := t.TempDir()
	crlFile := filepath.Join(dir, "ca.crl")
	crl := &seg.CRL{Files: []string{crlFile}}
	// No CRL yet: fail closed.
	if err := crl.Check([]*x509.Certificate{dev.Cert, ca.Cert}); !errors.Is(err, seg.ErrRevoked) {
		t.Errorf("no CRL: %v", err)
	}
	empty, _ := ca.CRL(1)
	os.WriteFile(crlFile, empty, 0o600)
	time.Sleep(1100 * time.Millisecond) // the files are looked at once a second
	if err := crl.Check([]*x509.Certificate{dev.Cert, ca.Cert}); err != nil {
		t.Errorf("empty CRL: %v", err)
	}
	// A CRL from another CA listing the certificate does not count, and
	// there is no CRL from its own CA in that file: refused.
	forged, _ := other.CRL(2, dev.Cert)
	os.WriteFile(crlFile, forged, 0o600)
	time.Sleep(1100 * time.Millisecond)
	if err := crl.Check([]*x509.Certificate{dev.Cert, ca.Cert}); !errors.Is(err, seg.ErrRevoked) {
		t.Errorf("only another CA's CRL: %v", err)
	}
	revoking, _ := ca.CRL(3, dev.Cert)
	os.WriteFile(crlFile, revoking, 0o600)
	time.Sleep(1100 * time.Millisecond)
	if err := crl.Check([]*x509.Certificate{dev.Cert, ca.Cert}); !errors.Is(err, seg.ErrRevoked) {
		t.Errorf("revoked: %v", err)
	}
	// A broken file keeps the last good list and says so.
	os.WriteFile(crlFile, []byte("garbage"), 0o600)
	time.Sleep(1100 * time.Millisecond)
	if err := crl.Check([]*x509.Certificate{dev.Cert, ca.Cert}); !errors.Is(err, seg.ErrRevoked) || crl.Err() == nil {
		t.Errorf("garbage after a good list: %v / %v", err, crl.Err())
	}
}

func TestNames(t *testing.T) {
	n := seg.Names{Realm: "CORP.EXAMPLE.TEST", Suffixes: []string{"example.com"}, NetBIOS: "CORP"}
	for in, want := range map[string]string{
		"alice": "alice", "alice@corp.example.test": "alice", "Alice@CORP.EXAMPLE.TEST": "Alice",
		`CORP\alice`: "alice", `corp.example.test\alice`: "alice", "alice@example.com": "alice",
	} {
		if got, err := n.User(in); err != nil || got != want {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
	for _, in := range []string{"", "a@b@c", `OTHER\alice`, "alice@other.test", "http/alice", "a\r\nb", `CORP\`, "@corp.example.test",
		"\xff", `CORP\a@corp.example.test`} {
		if got, err := n.User(in); !errors.Is(err, seg.ErrBadName) {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
	n.OtherSuffixes = true
	if got, err := n.User("alice@other.test"); err != nil || got != "alice@other.test" {
		t.Errorf("other suffix as an enterprise name: %q %v", got, err)
	}
	if !n.Same("ALICE", `CORP\alice`) || n.Same("kelly", "\u212aelly") || n.Same("alice", "bob") {
		t.Error("Same")
	}
}
