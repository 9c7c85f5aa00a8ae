package seg_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/segkcd/segkcd/internal/testinfra/testpki"
	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/seg"
)

// TestDeviceCertSAN: a certificate made by x509 with the UPN extension
// keeps its e-mail SAN readable to x509.
func TestDeviceCertSAN(t *testing.T) {
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

// verifiedRequest is a request as the TLS server hands it over after
// verifying the device's chain.
func verifiedRequest(cert *x509.Certificate, ca *x509.Certificate) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/Microsoft-Server-ActiveSync", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}, VerifiedChains: [][]*x509.Certificate{{cert, ca}}}
	return r
}

// directory is an AccountResolver over a fixed map, as the KDC would answer:
// keys are the names as Names.Principal gives them, ASCII letters
// upper-cased (what every AD folds; beyond ASCII this directory, like
// Samba's, keeps names apart).
type directory map[string]*kerberos.Account

func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func (d directory) Account(ctx context.Context, name string) (*kerberos.Account, error) {
	if a, ok := d[asciiUpper(name)]; ok {
		return a, nil
	}
	return nil, fmt.Errorf("%w: %s", kerberos.ErrClientUnknown, name)
}

// testDirectory: xsmith holds the UPN alice@example.com while another
// account is called alice; jdoe's UPN is j.doe@corp.example.test.
func testDirectory() directory {
	alice := &kerberos.Account{User: "alice", Name: "alice", UPN: "alice@corp.example.test", SID: "S-1-5-21-1-1101"}
	xsmith := &kerberos.Account{User: "xsmith", Name: "xsmith", UPN: "alice@example.com", SID: "S-1-5-21-1-1102"}
	jdoe := &kerberos.Account{User: "jdoe", Name: "jdoe", UPN: "j.doe@corp.example.test", SID: "S-1-5-21-1-1103"}
	return directory{"ALICE": alice, "ALICE@CORP.EXAMPLE.TEST": alice, "XSMITH": xsmith, "ALICE@EXAMPLE.COM": xsmith,
		"JDOE": jdoe, "J.DOE@CORP.EXAMPLE.TEST": jdoe, "JDOE@CORP.EXAMPLE.TEST": jdoe}
}

func TestCertificateAuth(t *testing.T) {
	ca, err := testpki.New("device CA")
	if err != nil {
		t.Fatal(err)
	}
	names := seg.Names{Realm: "CORP.EXAMPLE.TEST", Suffixes: []string{"example.com"}, NetBIOS: "CORP",
		Accounts: &seg.Accounts{Resolver: testDirectory()}}
	// xsmith's certificate carries his UPN alice@example.com: he is xsmith,
	// never the account alice.
	full, _ := ca.Device("alice@example.com", "j.doe@corp.example.test", "alice")
	for _, tc := range []struct {
		sources []seg.NameSource
		want    string
	}{
		{nil, "xsmith"},
		{[]seg.NameSource{seg.FromEmail, seg.FromUPN}, "jdoe"},
		{[]seg.NameSource{seg.FromCommonName}, "alice"},
	} {
		a := &seg.CertificateAuth{Sources: tc.sources, Names: names, Mapping: seg.MappingOff}
		id, err := a.Authenticate(verifiedRequest(full.Cert, ca.Cert))
		if err != nil || id.User != tc.want || id.Method != "certificate" {
			t.Errorf("%v: %+v %v", tc.sources, id, err)
		}
	}
	a := &seg.CertificateAuth{Names: names, Mapping: seg.MappingOff}
	// By default the UPN alone names the user: a certificate with a CN or
	// an e-mail address but no UPN (a machine or Wi-Fi certificate of the
	// same CA) names nobody.
	for _, c := range [][2]string{{"", "alice"}, {"alice@corp.example.test", ""}} {
		noUPN, _ := ca.Device("", c[0], c[1])
		if id, err := a.Authenticate(verifiedRequest(noUPN.Cert, ca.Cert)); !errors.Is(err, seg.ErrBadCredentials) {
			t.Errorf("no UPN, e-mail %q, CN %q: %+v %v", c[0], c[1], id, err)
		}
	}
	// No certificate, and a certificate the TLS layer did not verify.
	if _, err := a.Authenticate(httptest.NewRequest(http.MethodPost, "/", nil)); !errors.Is(err, seg.ErrNoCredentials) {
		t.Errorf("no certificate: %v", err)
	}
	r := verifiedRequest(full.Cert, ca.Cert)
	r.TLS.VerifiedChains = nil
	if _, err := a.Authenticate(r); !errors.Is(err, seg.ErrBadCredentials) {
		t.Errorf("unverified: %v", err)
	}
	// A UPN of a foreign domain, and one the directory does not know.
	for _, upn := range []string{"alice@elsewhere.test", "nobody@example.com"} {
		c, _ := ca.Device(upn, "", "")
		if _, err := a.Authenticate(verifiedRequest(c.Cert, ca.Cert)); !errors.Is(err, seg.ErrBadCredentials) || !errors.Is(err, seg.ErrBadName) {
			t.Errorf("%s: %v", upn, err)
		}
	}
	// Without a directory a UPN cannot name an account.
	a.Names.Accounts = nil
	if id, err := a.Authenticate(verifiedRequest(full.Cert, ca.Cert)); !errors.Is(err, seg.ErrNoDirectory) {
		t.Errorf("UPN without Names.Accounts: %+v %v", id, err)
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
		"alice": "alice", `CORP\alice`: "alice", `corp.example.test\alice`: "alice",
		// UPNs stay whole: their prefix is no account name.
		"alice@corp.example.test": "alice@corp.example.test", "Alice@CORP.EXAMPLE.TEST": "Alice@corp.example.test",
		"j.doe@example.com": "j.doe@example.com", "j.doe@EXAMPLE.COM": "j.doe@example.com",
	} {
		if got, err := n.Principal(in); err != nil || got != want {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
	for _, in := range []string{"", "a@b@c", `OTHER\alice`, "alice@other.test", "http/alice", "a\r\nb", `CORP\`, "@corp.example.test",
		"\xff", `CORP\a@corp.example.test`} {
		if got, err := n.Principal(in); !errors.Is(err, seg.ErrBadName) {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
	n.OtherSuffixes = true
	if got, err := n.Principal("alice@other.test"); err != nil || got != "alice@other.test" {
		t.Errorf("other suffix as an enterprise name: %q %v", got, err)
	}
	ctx := context.Background()
	// Without a directory no name is an account.
	for _, in := range []string{`CORP\alice`, "alice@example.com", "alice"} {
		if a, err := n.Resolve(ctx, in); !errors.Is(err, seg.ErrNoDirectory) {
			t.Errorf("%q without a directory: %+v %v", in, a, err)
		}
	}
	// With one, every form names the account that holds it, by its SID.
	n.Accounts = &seg.Accounts{Resolver: testDirectory()}
	for in, want := range map[string]string{"alice@example.com": "xsmith", "ALICE": "alice", "alice@corp.example.test": "alice",
		"J.Doe@Corp.Example.Test": "jdoe", `CORP\JDOE`: "jdoe", `corp\jdoe`: "jdoe"} {
		if a, err := n.Resolve(ctx, in); err != nil || a.User != want || a.SID != testDirectory()[asciiUpper(want)].SID {
			t.Errorf("%q: %+v %v", in, a, err)
		}
	}
	if _, err := n.Resolve(ctx, "nobody"); !errors.Is(err, seg.ErrBadName) || !errors.Is(err, kerberos.ErrClientUnknown) {
		t.Errorf("unknown: %v", err)
	}
	// Beyond ASCII nothing is folded: the long s is not an s, whatever Go's
	// tables say, and the Kelvin sign is not a k.
	for _, in := range []string{"\u017fmith", "\u212aelly", "\u017fam"} {
		if a, err := n.Resolve(ctx, in); !errors.Is(err, seg.ErrBadName) {
			t.Errorf("%q resolved: %+v %v", in, a, err)
		}
	}
}

// TestCRLStale: a CRL past its nextUpdate refuses the certificates it covers
// by default, and accepts them with AllowStale; both are logged (once) and
// counted.
func TestCRLStale(t *testing.T) {
	ca, _ := testpki.New("device CA")
	dev, _ := ca.Device("alice@corp.example.test", "", "")
	stale, _ := ca.CRLDue(1, time.Now().Add(-time.Hour))
	path, _ := testpki.WriteFile(t.TempDir(), "stale.crl", stale)
	reg := prometheus.NewRegistry()
	m, err := seg.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	crl := &seg.CRL{Files: []string{path}, Metrics: m, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	for i := 0; i < 3; i++ {
		if err := crl.Check([]*x509.Certificate{dev.Cert, ca.Cert}); !errors.Is(err, seg.ErrStaleCRL) {
			t.Fatalf("stale CRL: %v", err)
		}
	}
	if got := crl.Stale(); len(got) != 1 || got[0] != path {
		t.Errorf("Stale: %q", got)
	}
	crl.AllowStale = true
	if err := crl.Check([]*x509.Certificate{dev.Cert, ca.Cert}); err != nil {
		t.Errorf("stale CRL, AllowStale: %v", err)
	}
	// A revocation in a stale CRL still counts; a new list is warned about
	// again.
	other, _ := ca.Device("bob@corp.example.test", "", "")
	revoking, _ := ca.CRLDue(2, time.Now().Add(-time.Hour), dev.Cert)
	os.WriteFile(path, revoking, 0o600)
	crl.Reload()
	if err := crl.Check([]*x509.Certificate{dev.Cert, ca.Cert}); !errors.Is(err, seg.ErrRevoked) {
		t.Errorf("revoked in a stale CRL: %v", err)
	}
	if err := crl.Check([]*x509.Certificate{other.Cert, ca.Cert}); err != nil {
		t.Errorf("stale CRL, AllowStale, another device: %v", err)
	}
	if n := strings.Count(logs.String(), "past its nextUpdate"); n != 2 { // once per list read
		t.Errorf("%d warnings:\n%s", n, logs.String())
	}
	refused := gathered(t, reg, "seg_crl_stale_total", map[string]string{"action": "refused"})
	accepted := gathered(t, reg, "seg_crl_stale_total", map[string]string{"action": "accepted"})
	if refused != 3 || accepted != 2 {
		t.Errorf("seg_crl_stale_total: refused %v, accepted %v", refused, accepted)
	}
}

// TestCRLIntermediate: in a two-tier PKI the issuing CA's certificate is
// checked against the root's CRL, and a revoked issuing CA stops vouching
// for its devices.
func TestCRLIntermediate(t *testing.T) {
	root, _ := testpki.New("root CA")
	issuing, _ := root.Intermediate("issuing CA")
	dev, _ := issuing.Device("alice@corp.example.test", "", "")
	chain := []*x509.Certificate{dev.Cert, issuing.Cert, root.Cert}
	dir := t.TempDir()
	devCRL, _ := issuing.CRL(1)
	devPath, _ := testpki.WriteFile(dir, "issuing.crl", devCRL)
	rootPath := filepath.Join(dir, "root.crl")
	crl := &seg.CRL{Files: []string{devPath, rootPath}}
	if err := crl.Check(chain); !errors.Is(err, seg.ErrRevoked) || !strings.Contains(err.Error(), "root CA") {
		t.Errorf("no CRL from the root: %v", err)
	}
	good, _ := root.CRL(1)
	os.WriteFile(rootPath, good, 0o600)
	crl.Reload()
	if err := crl.Check(chain); err != nil {
		t.Errorf("both CRLs current: %v", err)
	}
	revoked, _ := root.CRL(2, issuing.Cert)
	os.WriteFile(rootPath, revoked, 0o600)
	crl.Reload()
	if err := crl.Check(chain); !errors.Is(err, seg.ErrRevoked) || !strings.Contains(err.Error(), "root CA") {
		t.Errorf("revoked issuing CA: %v", err)
	}
	// The issuing CA as the trust anchor: nothing above it to check.
	if err := crl.Check(chain[:2]); err != nil {
		t.Errorf("issuing CA as the anchor: %v", err)
	}
}

// With TrustedIssuers (the forest's NTAuthCertificates), a certificate of
// another CA that the TLS layer verified is refused; one of a listed CA
// logs in.
func TestCertificateAuthTrustedIssuers(t *testing.T) {
	ntauth, _ := testpki.New("enterprise CA")
	other, _ := testpki.New("another CA")
	names := seg.Names{Realm: "CORP.EXAMPLE.TEST", Accounts: &seg.Accounts{Resolver: testDirectory()}}
	a := &seg.CertificateAuth{Names: names, Mapping: seg.MappingOff, TrustedIssuers: []*x509.Certificate{ntauth.Cert}}
	good, _ := ntauth.Device("alice@corp.example.test", "", "")
	if id, err := a.Authenticate(verifiedRequest(good.Cert, ntauth.Cert)); err != nil || id.User != "alice" {
		t.Errorf("a certificate of an NTAuth CA: %+v %v", id, err)
	}
	bad, _ := other.Device("alice@corp.example.test", "", "")
	_, err := a.Authenticate(verifiedRequest(bad.Cert, other.Cert))
	if !errors.Is(err, seg.ErrBadCredentials) || !strings.Contains(err.Error(), "another CA") {
		t.Errorf("a certificate of a CA outside NTAuth: %v", err)
	}
	// Several verified chains (an issuing CA cross-signed, or renewed with
	// the same key): the one through a trusted issuer counts, whichever
	// the TLS layer found first. (Found by review.)
	r := verifiedRequest(good.Cert, ntauth.Cert)
	r.TLS.VerifiedChains = [][]*x509.Certificate{{good.Cert, other.Cert}, {good.Cert, ntauth.Cert}}
	if id, err := a.Authenticate(r); err != nil || id.User != "alice" {
		t.Errorf("the second verified chain through the NTAuth CA: %+v %v", id, err)
	}
}
