package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"

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
	if err != nil || !strings.Contains(out, `ok   ntauth "gateway test device CA": in NTAuthCertificates`) ||
		!strings.Contains(out, `WARN ntauth "unpublished device CA": not in NTAuthCertificates`) {
		t.Fatalf("-check, one CA published: %v\n%s", err, out)
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
