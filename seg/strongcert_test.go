package seg_test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/segkcd/segkcd/internal/testinfra/testpki"
	"github.com/segkcd/segkcd/seg"
)

// adcsSIDExtension is the SID extension as a Windows CA wrote it for
// S-1-5-21-3623811015-3361044348-30300820-1013 (the bytes of the example in
// Microsoft's KB5014754 write-ups, decoded by hand: SEQUENCE { [0] { OID
// 1.3.6.1.4.1.311.25.2.1, [0] { OCTET STRING } } }).
var adcsSIDExtension, _ = hex.DecodeString("303ea03c060a2b060104018237190201a02e042c" +
	"532d312d352d32312d333632333831313031352d333336313034343334382d33303330303832302d31303133")

func TestParseSIDExtension(t *testing.T) {
	if s, err := seg.ParseSIDExtension(adcsSIDExtension); err != nil || s != "S-1-5-21-3623811015-3361044348-30300820-1013" {
		t.Fatalf("ADCS's form: %q %v", s, err)
	}
	der, err := seg.MarshalSIDExtension("S-1-5-21-1-2-3-1104")
	if err != nil {
		t.Fatal(err)
	}
	if s, err := seg.ParseSIDExtension(der); err != nil || s != "S-1-5-21-1-2-3-1104" {
		t.Fatalf("round trip: %q %v", s, err)
	}
	if !bytes.Equal(mustSIDExt(t, "S-1-5-21-3623811015-3361044348-30300820-1013"), adcsSIDExtension) {
		t.Error("MarshalSIDExtension does not write what ADCS writes")
	}
	for name, b := range map[string][]byte{
		"empty":          {},
		"empty sequence": {0x30, 0x00},
		"trailing bytes": append(append([]byte{}, der...), 0),
		"not a SID":      sidExtWithText(t, "S-1-5-21-01-2"),
		"lower-case s":   sidExtWithText(t, "s-1-5-21-1-2"),
		"two SIDs":       twoSIDs(t),
	} {
		if s, err := seg.ParseSIDExtension(b); !errors.Is(err, seg.ErrBadSIDExtension) {
			t.Errorf("%s: %q %v", name, s, err)
		}
	}
}

func mustSIDExt(t *testing.T, s string) []byte {
	t.Helper()
	b, err := seg.MarshalSIDExtension(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sidExtWithText is a SID extension holding text that may be no SID.
func sidExtWithText(t *testing.T, text string) []byte {
	t.Helper()
	good := mustSIDExt(t, "S-1-5-21-1-2")
	return bytes.Replace(good, []byte("S-1-5-21-1-2"), []byte(text), 1)
}

func twoSIDs(t *testing.T) []byte {
	a, b := mustSIDExt(t, "S-1-5-21-1-2"), mustSIDExt(t, "S-1-5-21-1-3")
	inner := append(append([]byte{}, a[2:]...), b[2:]...)
	return append([]byte{0x30, byte(len(inner))}, inner...)
}

func TestSIDFromURI(t *testing.T) {
	for uri, want := range map[string]string{
		"tag:microsoft.com,2022-09-14:sid:S-1-5-21-1-2-3-1104": "S-1-5-21-1-2-3-1104",
		"TAG:Microsoft.com,2022-09-14:sid:S-1-5-21-1-2":        "S-1-5-21-1-2",
	} {
		if s, ok, err := seg.SIDFromURI(uri); err != nil || !ok || s != want {
			t.Errorf("%s: %q %v %v", uri, s, ok, err)
		}
	}
	if _, ok, err := seg.SIDFromURI("https://example.com/"); ok || err != nil {
		t.Error("another URI")
	}
	for _, uri := range []string{"tag:microsoft.com,2022-09-14:sid:", "tag:microsoft.com,2022-09-14:sid:S-1-5-21-1-2x",
		"tag:microsoft.com,2022-09-14:sid:S-1-5-21-1-2/../x"} {
		if _, _, err := seg.SIDFromURI(uri); !errors.Is(err, seg.ErrBadSIDExtension) {
			t.Errorf("%s: %v", uri, err)
		}
	}
}

// FuzzParseSIDExtension: whatever a certificate's extension holds, the
// parser answers a SID that round-trips, or ErrBadSIDExtension.
func FuzzParseSIDExtension(f *testing.F) {
	f.Add(adcsSIDExtension)
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		s, err := seg.ParseSIDExtension(der)
		if err != nil {
			if !errors.Is(err, seg.ErrBadSIDExtension) {
				t.Fatal(err)
			}
			return
		}
		again, err := seg.MarshalSIDExtension(s)
		if err != nil {
			t.Fatalf("%q parsed but does not marshal: %v", s, err)
		}
		if s2, err := seg.ParseSIDExtension(again); err != nil || s2 != s {
			t.Fatalf("%q does not round-trip: %q %v", s, s2, err)
		}
	})
}

// FuzzSIDFromURI: a SAN URI is a SID of one spelling, another URI, or
// ErrBadSIDExtension.
func FuzzSIDFromURI(f *testing.F) {
	f.Add("tag:microsoft.com,2022-09-14:sid:S-1-5-21-1-2-3-1104")
	f.Add("tag:microsoft.com,2022-09-14:sid:S-1-0x5-21")
	f.Fuzz(func(t *testing.T, uri string) {
		s, ok, err := seg.SIDFromURI(uri)
		switch {
		case err != nil && !errors.Is(err, seg.ErrBadSIDExtension):
			t.Fatal(err)
		case err == nil && ok:
			if !strings.HasPrefix(s, "S-1-") || strings.ContainsAny(s, "/\\ \x00") {
				t.Fatalf("%q -> %q", uri, s)
			}
			if s2, ok2, err2 := seg.SIDFromURI(seg.SIDURI(s)); s2 != s || !ok2 || err2 != nil {
				t.Fatalf("%q does not round-trip", s)
			}
		}
	})
}

// mappingDirectory is a CertificateDirectory over a fixed map.
type mappingDirectory map[string]struct {
	alt     []string
	created time.Time
}

func (d mappingDirectory) CertificateMappings(ctx context.Context, sid string) ([]string, time.Time, error) {
	e, ok := d[sid]
	if !ok {
		return nil, time.Time{}, fmt.Errorf("no account %s", sid)
	}
	return e.alt, e.created, nil
}

// TestCertificateMapping: the three modes against certificates with the
// account's SID (both forms), another account's, none, and strong
// altSecurityIdentities entries; results are counted and refusals logged.
func TestCertificateMapping(t *testing.T) {
	ca, _ := testpki.New("device CA")
	dir := testDirectory()
	alice, xsmith := dir["ALICE"], dir["XSMITH"]
	names := seg.Names{Realm: "CORP.EXAMPLE.TEST", Suffixes: []string{"example.com"}, Accounts: &seg.Accounts{Resolver: dir}}
	issue := func(sid string, in testpki.SIDPlace) *x509.Certificate {
		d, err := ca.DeviceFor(testpki.DeviceSpec{UPN: "alice@corp.example.test", SID: sid, SIDIn: in})
		if err != nil {
			t.Fatal(err)
		}
		return d.Cert
	}
	ext, uri, both := issue(alice.SID, testpki.SIDExtension), issue(alice.SID, testpki.SIDURI), issue(alice.SID, testpki.SIDExtension|testpki.SIDURI)
	other, otherURI := issue(xsmith.SID, testpki.SIDExtension), issue(xsmith.SID, testpki.SIDURI)
	deleted := issue("S-1-5-21-1-9999", testpki.SIDExtension) // an account that is gone
	none := issue("", 0)
	old, _ := ca.DeviceFor(testpki.DeviceSpec{UPN: "alice@corp.example.test", NotBefore: time.Now().Add(-48 * time.Hour)})
	serial := old.Cert.SerialNumber.Bytes()
	for i, j := 0, len(serial)-1; i < j; i, j = i+1, j-1 {
		serial[i], serial[j] = serial[j], serial[i]
	}
	issuerSerial := "X509:<I>CN=device CA<SR>" + hex.EncodeToString(serial)
	thumb := sha1.Sum(old.Cert.Raw)
	directory := mappingDirectory{alice.SID: {created: time.Now().Add(-24 * time.Hour)}}

	var log bytes.Buffer
	reg := prometheus.NewRegistry()
	metrics, _ := seg.NewMetrics(reg)
	for _, tc := range []struct {
		name string
		mode seg.CertificateMapping
		alt  []string
		cert *x509.Certificate
		want error // nil: alice
	}{
		{"full, SID extension", seg.MappingFull, nil, ext, nil},
		{"full, SAN URI", seg.MappingFull, nil, uri, nil},
		{"full, both", seg.MappingFull, nil, both, nil},
		{"full, another account's SID", seg.MappingFull, nil, other, seg.ErrSIDMismatch},
		{"full, another account's SID as a URI", seg.MappingFull, nil, otherURI, seg.ErrSIDMismatch},
		{"full, a deleted account's SID", seg.MappingFull, nil, deleted, seg.ErrSIDMismatch},
		{"full, no SID", seg.MappingFull, nil, none, seg.ErrNoStrongMapping},
		{"full, issuer and serial", seg.MappingFull, []string{issuerSerial}, old.Cert, nil},
		{"full, thumbprint", seg.MappingFull, []string{"X509:<SHA1-PUKEY>" + hex.EncodeToString(thumb[:])}, old.Cert, nil},
		{"full, weak entries only", seg.MappingFull, []string{"X509:<S>CN=alice", "X509:<RFC822>alice@corp.example.test",
			"X509:<I>CN=device CA<S>CN=alice"}, old.Cert, seg.ErrNoStrongMapping},
		{"full, another certificate's serial", seg.MappingFull, []string{issuerSerial}, none, seg.ErrNoStrongMapping},
		{"compatibility, no SID", seg.MappingCompatibility, nil, none, nil},
		{"compatibility, another account's SID", seg.MappingCompatibility, nil, other, seg.ErrSIDMismatch},
		{"compatibility, issued before the account", seg.MappingCompatibility, nil, old.Cert, seg.ErrCertificatePredatesAccount},
		{"off, no SID", seg.MappingOff, nil, none, nil},
		{"off, another account's SID", seg.MappingOff, nil, other, seg.ErrSIDMismatch},
	} {
		e := directory[alice.SID]
		e.alt = tc.alt
		directory[alice.SID] = e
		a := &seg.CertificateAuth{Names: names, Mapping: tc.mode, Directory: directory, Metrics: metrics,
			Logger: slog.New(slog.NewTextHandler(&log, nil))}
		id, err := a.Authenticate(verifiedRequest(tc.cert, ca.Cert))
		switch {
		case tc.want == nil && (err != nil || id.SID != alice.SID):
			t.Errorf("%s: %+v %v", tc.name, id, err)
		case tc.want != nil && (!errors.Is(err, tc.want) || !errors.Is(err, seg.ErrBadCredentials)):
			t.Errorf("%s: %+v %v, want %v", tc.name, id, err, tc.want)
		}
	}
	for _, want := range []string{"result=sid_mismatch", "event 41", "result=no_strong_mapping", "event 39", "result=predates_account", "event 40",
		"served without a strong mapping"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if strings.Count(log.String(), "served without a strong mapping") != 1 {
		t.Error("a weakly mapped certificate logged more than once")
	}
	// SIDExtensionOnly: a SID in the SAN URI alone is no strong mapping
	// (an enrollee who writes the SAN writes that too); the extension is.
	for cert, want := range map[*x509.Certificate]error{uri: seg.ErrNoStrongMapping, ext: nil, otherURI: seg.ErrNoStrongMapping} {
		a := &seg.CertificateAuth{Names: names, SIDExtensionOnly: true}
		if id, err := a.Authenticate(verifiedRequest(cert, ca.Cert)); !errors.Is(err, want) || want == nil && id.SID != alice.SID {
			t.Errorf("extension only: %+v %v, want %v", id, err, want)
		}
	}
	if mode, err := seg.ParseCertificateMapping(""); err != nil || mode != seg.MappingFull || mode.String() != "full" {
		t.Errorf("default mode: %v %v", mode, err)
	}
	if _, err := seg.ParseCertificateMapping("weak"); err == nil {
		t.Error("unknown mode accepted")
	}
}

// TestCertificateMappingMovedUPN: a certificate whose SID is not the one
// remembered for its UPN makes the gateway ask the directory again; when
// the UPN has passed to the SID's account the device is that account's,
// from then on for everyone presenting the UPN.
func TestCertificateMappingMovedUPN(t *testing.T) {
	ca, _ := testpki.New("device CA")
	dir := testDirectory()
	names := seg.Names{Realm: "CORP.EXAMPLE.TEST", Suffixes: []string{"example.com"},
		Accounts: &seg.Accounts{Resolver: dir, MinRefresh: time.Nanosecond}}
	a := &seg.CertificateAuth{Names: names}
	issue := func(sid string) *x509.Certificate {
		d, _ := ca.DeviceFor(testpki.DeviceSpec{UPN: "alice@example.com", SID: sid, SIDIn: testpki.SIDExtension})
		return d.Cert
	}
	oldHolder, newHolder := issue(dir["XSMITH"].SID), issue(dir["JDOE"].SID)
	if id, err := a.Authenticate(verifiedRequest(oldHolder, ca.Cert)); err != nil || id.User != "xsmith" {
		t.Fatalf("before: %+v %v", id, err)
	}
	if _, err := a.Authenticate(verifiedRequest(newHolder, ca.Cert)); !errors.Is(err, seg.ErrSIDMismatch) {
		t.Fatalf("jdoe's certificate for xsmith's UPN: %v", err)
	}
	dir["ALICE@EXAMPLE.COM"] = dir["JDOE"]
	if id, err := a.Authenticate(verifiedRequest(newHolder, ca.Cert)); err != nil || id.User != "jdoe" {
		t.Fatalf("after the move: %+v %v", id, err)
	}
	if _, err := a.Authenticate(verifiedRequest(oldHolder, ca.Cert)); !errors.Is(err, seg.ErrSIDMismatch) {
		t.Fatalf("xsmith's old certificate after the move: %v", err)
	}
}
