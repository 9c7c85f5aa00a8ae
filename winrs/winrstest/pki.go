package winrstest

import (
	"crypto/tls"
	"crypto/x509"

	"github.com/segkcd/segkcd/internal/certname"
	"github.com/segkcd/segkcd/internal/testinfra/testpki"
)

// PKI is a throwaway certificate authority for HTTPS test hosts and
// client-certificate logons.
type PKI struct {
	// CAPEM is the CA certificate.
	CAPEM []byte
	ca    *testpki.CA
}

// NewPKI makes a new CA.
func NewPKI() (*PKI, error) {
	ca, err := testpki.New("segkcd test host CA")
	if err != nil {
		return nil, err
	}
	return &PKI{CAPEM: ca.PEM, ca: ca}, nil
}

// ServerTLS is an HTTPS listener configuration for 127.0.0.1 and
// localhost that also asks for client certificates issued by this CA.
func (p *PKI) ServerTLS() (*tls.Config, error) {
	srv, err := p.ca.Server()
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{srv.TLS}, MinVersion: tls.VersionTLS12,
		ClientCAs: p.ca.Pool, ClientAuth: tls.VerifyClientCertIfGiven}, nil
}

// ClientTLS is what a winrs.Config's TLS needs to trust the test host's
// certificate: this CA as the only root.
func (p *PKI) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: p.ca.Pool, MinVersion: tls.VersionTLS12}
}

// ClientCert issues a client-authentication certificate carrying upn in
// its subject alternative name, as WinRM's certificate mapping wants.
func (p *PKI) ClientCert(upn string) (tls.Certificate, error) {
	dev, err := p.ca.Device(upn, "", upn)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(dev.CertPEM, dev.KeyPEM)
}

// certUPN returns the UPN otherName of a certificate's subject
// alternative name, or "".
func certUPN(c *x509.Certificate) string {
	for _, ext := range c.Extensions {
		if ext.Id.String() != "2.5.29.17" {
			continue
		}
		if upns, err := certname.ParseUPNs(ext.Value); err == nil && len(upns) > 0 {
			return upns[0]
		}
	}
	return ""
}
