// Package testpki is a throwaway certificate authority for tests, the demo
// and benchmarks: server certificates for loopback listeners, device
// certificates with a UPN, e-mail or CN, and CRLs.
//
// Users must not import this package: it is test plumbing.
package testpki

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
	"os"
	"path/filepath"
	"time"

	"github.com/segkcd/segkcd/internal/certname"
)

// CA is a certificate authority with an ECDSA P-256 key.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte // the CA certificate
	Pool *x509.CertPool
}

// New makes a CA named name, valid from an hour ago for 90 days (its
// certificates too).
func New(name string) (*CA, error) { return newCA(name, nil) }

// Intermediate issues a CA certificate named name under ca: a two-tier
// PKI's issuing CA. Its Pool holds ca's root only, as a server's ClientCAs
// would.
func (ca *CA) Intermediate(name string) (*CA, error) { return newCA(name, ca) }

// newCA makes a CA signed by parent, or self-signed when parent is nil.
func newCA(name string, parent *CA) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	sn, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: sn, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if parent != nil {
		pool = parent.Pool
	} else {
		pool.AddCert(cert)
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Pool: pool}, nil
}

// Issued is a certificate with its key.
type Issued struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte
	TLS     tls.Certificate
}

// Issue signs tmpl (serial number, validity and a new key are filled in).
func (ca *CA) Issue(tmpl *x509.Certificate) (*Issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	sn, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = sn
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour)
	}
	if tmpl.KeyUsage == 0 {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	is := &Issued{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})}
	is.TLS, err = tls.X509KeyPair(is.CertPEM, is.KeyPEM)
	return is, err
}

// Server issues a server certificate for 127.0.0.1, ::1, localhost and the
// given names and addresses.
func (ca *CA) Server(hosts ...string) (*Issued, error) {
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.Issue(tmpl)
}

// Device issues a client-authentication certificate. Each of upn, email and
// cn goes into the certificate when not empty: the UPN as a SAN otherName,
// the e-mail as an RFC 822 SAN, cn as the subject's common name.
func (ca *CA) Device(upn, email, cn string) (*Issued, error) {
	return ca.DeviceFor(DeviceSpec{UPN: upn, Email: email, CN: cn})
}

// SIDPlace says where a device certificate carries its account's SID
// (KB5014754's strong mappings).
type SIDPlace int

const (
	// SIDExtension is the SID extension 1.3.6.1.4.1.311.25.2, as ADCS writes it.
	SIDExtension SIDPlace = 1 << iota
	// SIDURI is the SAN URI tag:microsoft.com,2022-09-14:sid:<SID>, as Intune writes it.
	SIDURI
)

// DeviceSpec is what a device certificate says. SID goes where SIDIn says
// (nowhere when SIDIn is 0); NotBefore, when set, dates the certificate.
type DeviceSpec struct {
	UPN, Email, CN string
	SID            string
	SIDIn          SIDPlace
	NotBefore      time.Time
}

// DeviceFor issues a client-authentication certificate as d says.
func (ca *CA) DeviceFor(d DeviceSpec) (*Issued, error) {
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: d.CN},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if !d.NotBefore.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = d.NotBefore, d.NotBefore.Add(90*24*time.Hour)
	}
	var names [][]byte
	if d.UPN != "" {
		// A SAN extension of our own replaces the one x509 would build from
		// EmailAddresses, so the e-mail goes in as a GeneralName as well.
		gn, err := certname.MarshalUPN(d.UPN)
		if err != nil {
			return nil, err
		}
		names = append(names, gn)
	}
	if d.Email != "" {
		e, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 1, Bytes: []byte(d.Email)})
		if err != nil {
			return nil, err
		}
		names = append(names, e)
	}
	if d.SIDIn&SIDURI != 0 {
		u, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(certname.SIDURIPrefix + d.SID)})
		if err != nil {
			return nil, err
		}
		names = append(names, u)
	}
	if len(names) > 0 {
		san, err := certname.SANExtension(names...)
		if err != nil {
			return nil, err
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: san})
	}
	if d.SIDIn&SIDExtension != 0 {
		ext, err := certname.MarshalSIDExtension(d.SID)
		if err != nil {
			return nil, err
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 25, 2}, Value: ext})
	}
	return ca.Issue(tmpl)
}

// CRL returns a PEM CRL, due for renewal in a day, that revokes the given
// certificates.
func (ca *CA) CRL(number int64, revoked ...*x509.Certificate) ([]byte, error) {
	return ca.CRLDue(number, time.Now().Add(24*time.Hour), revoked...)
}

// CRLDue is CRL with the given nextUpdate (in the past for a stale CRL).
func (ca *CA) CRLDue(number int64, nextUpdate time.Time, revoked ...*x509.Certificate) ([]byte, error) {
	thisUpdate := time.Now().Add(-time.Minute)
	if nextUpdate.Before(thisUpdate) {
		thisUpdate = nextUpdate.Add(-24 * time.Hour)
	}
	var entries []x509.RevocationListEntry
	for _, c := range revoked {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: time.Now().Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(number), ThisUpdate: thisUpdate, NextUpdate: nextUpdate,
		RevokedCertificateEntries: entries,
	}, ca.Cert, ca.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
}

// WriteFile writes b to dir/name (0600) and returns the path.
func WriteFile(dir, name string, b []byte) (string, error) {
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, b, 0o600)
}
