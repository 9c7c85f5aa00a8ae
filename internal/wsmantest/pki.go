package wsmantest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"net"
	"time"
)

// PKI is a throwaway certificate authority for HTTPS test hosts and
// client-certificate logons.
type PKI struct {
	// CAPEM is the CA certificate, for psremote.Config.CACert.
	CAPEM []byte
	ca    *x509.Certificate
	key   *ecdsa.PrivateKey
	pool  *x509.CertPool
}

// NewPKI makes a new CA.
func NewPKI() (*PKI, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "segkcd test host CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &PKI{CAPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca: ca, key: key, pool: pool}, nil
}

func (p *PKI) issue(tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.SerialNumber = sn
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// ServerTLS is an HTTPS listener configuration for 127.0.0.1 and
// localhost that also asks for client certificates issued by this CA.
func (p *PKI) ServerTLS() (*tls.Config, error) {
	c, k, err := p.issue(&x509.Certificate{Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		ClientCAs: p.pool, ClientAuth: tls.VerifyClientCertIfGiven}, nil
}

// oidUPN is the Microsoft UPN otherName (szOID_NT_PRINCIPAL_NAME).
var oidUPN = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}

// otherName is OtherName (RFC 5280); Value is the [0] EXPLICIT wrapper.
type otherName struct {
	TypeID asn1.ObjectIdentifier
	Value  asn1.RawValue
}

// ClientCert issues a client-authentication certificate carrying upn in
// its subject alternative name, as WinRM's certificate mapping wants.
func (p *PKI) ClientCert(upn string) (certPEM, keyPEM []byte, err error) {
	val, err := asn1.MarshalWithParams(upn, "utf8")
	if err != nil {
		return nil, nil, err
	}
	on, err := asn1.MarshalWithParams(otherName{TypeID: oidUPN, Value: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: val}}, "tag:0")
	if err != nil {
		return nil, nil, err
	}
	san, err := asn1.Marshal([]asn1.RawValue{{FullBytes: on}})
	if err != nil {
		return nil, nil, err
	}
	return p.issue(&x509.Certificate{Subject: pkix.Name{CommonName: upn},
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: san}}})
}

// certUPN returns the UPN otherName of a certificate's subject
// alternative name, or "".
func certUPN(c *x509.Certificate) string {
	for _, ext := range c.Extensions {
		if !ext.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
			continue
		}
		var names []asn1.RawValue
		if _, err := asn1.Unmarshal(ext.Value, &names); err != nil {
			return ""
		}
		for _, n := range names {
			if n.Class != asn1.ClassContextSpecific || n.Tag != 0 {
				continue
			}
			var on otherName
			if _, err := asn1.UnmarshalWithParams(n.FullBytes, &on, "tag:0"); err != nil || !on.TypeID.Equal(oidUPN) {
				continue
			}
			var upn string
			if on.Value.Class != asn1.ClassContextSpecific || on.Value.Tag != 0 {
				continue
			}
			if _, err := asn1.UnmarshalWithParams(on.Value.Bytes, &upn, "utf8"); err == nil {
				return upn
			}
		}
	}
	return ""
}
