package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/examples/internal/siteconfig"
	"github.com/segkcd/segkcd/internal/testinfra/testpki"
)

// TestGatewayNTAuth: with cert_directory, -check compares the device CAs
// with AD's NTAuthCertificates (a warning for a CA outside it; a failure
// with cert_ntauth, which would refuse its devices); the lab publishes the
// fixture's CA, as certutil -dspublish NTAuthCA does, and then it passes.
// (The refusal itself is seg's CertificateAuth.TrustedIssuers, tested in
// seg.)
func TestGatewayNTAuth(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	pw, err := testpki.WriteFile(f.dir, "bind-ntauth.pw", []byte(f.lab.AdminPassword+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := f.conf
	c.CertDirectory = &siteconfig.AD{LDAPURL: f.lab.LDAPSURL(), CAFile: f.lab.CAFile, ServerName: f.lab.HostName,
		BindUser: f.lab.AdminBindName(), BindPassword: siteconfig.Secret{File: pw}}
	other, err := testpki.New("unpublished device CA")
	if err != nil {
		t.Fatal(err)
	}
	otherFile, _ := testpki.WriteFile(f.dir, "unpublished-ca.pem", other.PEM)
	c.ClientCAFiles = append(append([]string(nil), c.ClientCAFiles...), otherFile)
	check := func(c config) (string, error) {
		t.Helper()
		out, err := exec.Command(f.bin, "-check", "-config", f.writeConfig(t, c)).CombinedOutput()
		return string(out), err
	}
	if err := f.lab.PublishNTAuth(ctx, f.ca.Cert.Raw); err != nil {
		t.Fatal(err)
	}
	out, err := check(c)
	if !strings.Contains(out, "ok   rc4_cutoff svc_gw: msDS-SupportedEncryptionTypes ") {
		t.Errorf("-check with cert_directory: no line on the service account's encryption types\n%s", out)
	}
	if err != nil || !strings.Contains(out, `ok   ntauth "gateway test device CA": in NTAuthCertificates`) ||
		!strings.Contains(out, `WARN ntauth "unpublished device CA": not in NTAuthCertificates`) {
		t.Fatalf("-check, one CA published: %v\n%s", err, out)
	}
	// The service account allowing RC4 as well: a warning with the fix,
	// though its keys (AES) still work.
	admin, err := f.lab.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.SetSupportedEncryptionTypes(ctx, "svc_gw", ad.EncRC4HMAC|ad.EncAES); err != nil {
		t.Fatal(err)
	}
	out, _ = check(c)
	if _, err := admin.SetSupportedEncryptionTypes(ctx, "svc_gw", ad.EncAES); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "WARN rc4_cutoff svc_gw: msDS-SupportedEncryptionTypes allows") || !strings.Contains(out, "set it to AES (24)") {
		t.Errorf("-check, the service account allowing RC4:\n%s", out)
	}
	c.CertNTAuth = true
	out, err = check(c)
	if err == nil || !strings.Contains(out, `FAIL ntauth "unpublished device CA": not in NTAuthCertificates: cert_ntauth refuses its devices`) ||
		!strings.Contains(out, "certutil -dspublish") {
		t.Fatalf("-check, cert_ntauth: %v\n%s", err, out)
	}
	c.ClientCAFiles = f.conf.ClientCAFiles
	if out, err := check(c); err != nil || strings.Contains(out, "FAIL") {
		t.Fatalf("-check, cert_ntauth, the published CA only: %v\n%s", err, out)
	}
	// A configuration error without cert_directory.
	c.CertDirectory = nil
	if out, err := check(c); err == nil || !strings.Contains(out, "cert_ntauth: needs cert_directory") {
		t.Fatalf("cert_ntauth without cert_directory: %v\n%s", err, out)
	}
}
