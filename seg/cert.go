package seg

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"
	"unicode/utf8"
)

// NameSource is a place in a device certificate that can name its user.
type NameSource int

const (
	// FromUPN is the SAN otherName of type UPN (OID 1.3.6.1.4.1.311.20.2.3),
	// what Windows and most MDM CAs put in device certificates.
	FromUPN NameSource = iota + 1
	// FromEmail is the first RFC 822 name of the SAN.
	FromEmail
	// FromCommonName is the subject's CN.
	FromCommonName
)

// String names the source as the log and errors show it.
func (s NameSource) String() string {
	switch s {
	case FromUPN:
		return "UPN"
	case FromEmail:
		return "email"
	case FromCommonName:
		return "CN"
	}
	return fmt.Sprintf("NameSource(%d)", int(s))
}

// CertificateAuth authenticates devices by their TLS client certificate, as
// SEG's KCD mode does. The chain is verified by the TLS server: configure it
// with ClientCAs (every device CA pool in one x509.CertPool) and ClientAuth
// tls.RequireAndVerifyClientCert, or tls.VerifyClientCertIfGiven when Basic
// is allowed too (see AnyOf). CertificateAuth refuses a request whose
// connection has no verified chain, so it cannot be fooled by a server that
// only requested a certificate.
type CertificateAuth struct {
	// Sources are tried in order; the first that holds a name wins. Empty
	// means FromUPN, FromEmail, FromCommonName.
	Sources []NameSource
	// Names maps the certificate's name to the user.
	Names Names
	// Revocation, when set, refuses revoked certificates.
	Revocation *CRL
}

// Authenticate implements ProxyHandler.Authenticate.
func (a *CertificateAuth) Authenticate(r *http.Request) (*Identity, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, ErrNoCredentials
	}
	if len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil, fmt.Errorf("%w: the client certificate's chain was not verified (set tls.Config.ClientCAs and ClientAuth)", ErrBadCredentials)
	}
	chain := r.TLS.VerifiedChains[0]
	leaf := chain[0]
	if a.Revocation != nil {
		if err := a.Revocation.Check(chain); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadCredentials, err)
		}
	}
	sources := a.Sources
	if len(sources) == 0 {
		sources = []NameSource{FromUPN, FromEmail, FromCommonName}
	}
	for _, s := range sources {
		name, err := certName(leaf, s)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %s: %v", ErrBadCredentials, s, err)
		}
		if name == "" {
			continue
		}
		user, err := a.Names.User(name)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %s: %w", ErrBadCredentials, s, err)
		}
		return &Identity{User: user, Name: name, Method: "certificate", Certificate: leaf}, nil
	}
	return nil, fmt.Errorf("%w: the certificate names no user (%v)", ErrBadCredentials, sources)
}

func certName(c *x509.Certificate, s NameSource) (string, error) {
	switch s {
	case FromUPN:
		for _, e := range c.Extensions {
			if e.Id.Equal(oidSAN) {
				upns, err := ParseUPNs(e.Value)
				if err != nil || len(upns) == 0 {
					return "", err
				}
				return upns[0], nil
			}
		}
	case FromEmail:
		if len(c.EmailAddresses) > 0 {
			return c.EmailAddresses[0], nil
		}
	case FromCommonName:
		return c.Subject.CommonName, nil
	default:
		return "", fmt.Errorf("unknown name source %d", int(s))
	}
	return "", nil
}

var (
	oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidUPN = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}
)

// ParseUPNs returns the UPNs in a subjectAltName extension's value (the DER
// of GeneralNames): the otherName entries of type 1.3.6.1.4.1.311.20.2.3,
// whose value is a UTF8String. crypto/x509 parses the SAN but drops
// otherName entries.
func ParseUPNs(der []byte) ([]string, error) {
	var names []asn1.RawValue
	rest, err := asn1.Unmarshal(der, &names)
	if err != nil {
		return nil, fmt.Errorf("subjectAltName: %w", err)
	}
	if len(rest) != 0 {
		return nil, errors.New("subjectAltName: trailing data")
	}
	var upns []string
	for _, n := range names {
		// otherName [0] IMPLICIT SEQUENCE { type-id OID, value [0] EXPLICIT ANY }
		if n.Class != asn1.ClassContextSpecific || n.Tag != 0 || !n.IsCompound {
			continue
		}
		var id asn1.ObjectIdentifier
		rest, err := asn1.Unmarshal(n.Bytes, &id)
		if err != nil {
			return nil, fmt.Errorf("subjectAltName otherName: %w", err)
		}
		if !id.Equal(oidUPN) {
			continue
		}
		var wrapped asn1.RawValue
		if rest, err = asn1.Unmarshal(rest, &wrapped); err != nil {
			return nil, fmt.Errorf("subjectAltName UPN: %w", err)
		}
		if len(rest) != 0 || wrapped.Class != asn1.ClassContextSpecific || wrapped.Tag != 0 || !wrapped.IsCompound {
			return nil, errors.New("subjectAltName UPN: not an explicit [0] value")
		}
		var v asn1.RawValue
		if rest, err = asn1.Unmarshal(wrapped.Bytes, &v); err != nil {
			return nil, fmt.Errorf("subjectAltName UPN: %w", err)
		}
		if len(rest) != 0 || v.Class != asn1.ClassUniversal || v.Tag != asn1.TagUTF8String || v.IsCompound {
			return nil, errors.New("subjectAltName UPN: not a UTF8String")
		}
		if !utf8.Valid(v.Bytes) {
			return nil, errors.New("subjectAltName UPN: invalid UTF-8")
		}
		upns = append(upns, string(v.Bytes))
	}
	return upns, nil
}

// MarshalUPN returns a GeneralName otherName of type UPN, for
// x509.Certificate.ExtraExtensions of device certificates (an MDM's CA, and
// tests).
func MarshalUPN(upn string) ([]byte, error) {
	value, err := asn1.MarshalWithParams(upn, "utf8")
	if err != nil {
		return nil, err
	}
	id, err := asn1.Marshal(oidUPN)
	if err != nil {
		return nil, err
	}
	explicit, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: value})
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: append(id, explicit...)})
}

// SANExtension wraps GeneralName values (MarshalUPN's and others) into a
// subjectAltName extension.
func SANExtension(generalNames ...[]byte) ([]byte, error) {
	return asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: bytes.Join(generalNames, nil)})
}

// CRL refuses certificates listed in certificate revocation lists read from
// files, each signed by one of the device CAs. A file is read again when its
// modification time or size changes (checked at most once per second), so an
// MDM can replace it in place. A CRL whose signature does not verify against
// the CA that issued the certificate does not count. A file that cannot be
// read or parsed keeps its last good contents and the error is returned by
// Err; before any good read, every certificate is refused (fail closed).
type CRL struct {
	// Files are DER or PEM CRLs.
	Files []string

	mu      sync.Mutex
	checked time.Time
	files   map[string]*crlFile
}

type crlFile struct {
	last    os.FileInfo // of the last good read
	list    *x509.RevocationList
	serials map[string]bool // revoked serial numbers, as big.Int.String
	// signed remembers the signature check per issuer certificate (its DER),
	// so that each request costs a map lookup, not an ECDSA or RSA verify.
	signed map[string]bool
	err    error
}

// ErrRevoked is matched by the error for a revoked certificate.
var ErrRevoked = errors.New("seg: certificate revoked")

// Check refuses chain[0] when a CRL issued by chain[1] lists it.
func (c *CRL) Check(chain []*x509.Certificate) error {
	if len(chain) < 2 {
		return fmt.Errorf("%w: certificate chain too short for a revocation check", ErrBadCredentials)
	}
	leaf, issuer := chain[0], chain[1]
	c.mu.Lock()
	defer c.mu.Unlock()
	files, err := c.current()
	if err != nil {
		return err
	}
	found := false
	for _, f := range files {
		if !bytes.Equal(f.list.RawIssuer, issuer.RawSubject) {
			continue
		}
		ok, checked := f.signed[string(issuer.Raw)]
		if !checked {
			ok = f.list.CheckSignatureFrom(issuer) == nil
			f.signed[string(issuer.Raw)] = ok
		}
		if !ok {
			continue
		}
		found = true
		if f.serials[leaf.SerialNumber.String()] {
			return fmt.Errorf("%w: serial %s by %s", ErrRevoked, leaf.SerialNumber, printable(issuer.Subject.CommonName))
		}
	}
	if !found {
		return fmt.Errorf("%w: no CRL from %s", ErrRevoked, printable(issuer.Subject.CommonName))
	}
	return nil
}

// Reload reads every file again now, changed or not (on SIGHUP), and
// returns what could not be read.
func (c *CRL) Reload() error {
	c.mu.Lock()
	if c.files == nil {
		c.files = map[string]*crlFile{}
	}
	c.checked = time.Now()
	for _, name := range c.Files {
		if f := c.files[name]; f != nil {
			f.last = nil
		}
		c.reload(name)
	}
	c.mu.Unlock()
	return c.Err()
}

// Err reports the files that could not be read at the last check.
func (c *CRL) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, f := range c.files {
		if f.err != nil {
			errs = append(errs, f.err)
		}
	}
	return errors.Join(errs...)
}

// current reads changed files (at most once a second) and returns the
// good ones. c.mu is held.
func (c *CRL) current() ([]*crlFile, error) {
	if c.files == nil {
		c.files = map[string]*crlFile{}
	}
	now := time.Now()
	if now.Sub(c.checked) >= time.Second {
		c.checked = now
		for _, name := range c.Files {
			c.reload(name)
		}
	}
	var good []*crlFile
	for _, name := range c.Files {
		if f := c.files[name]; f != nil && f.list != nil {
			good = append(good, f)
		}
	}
	if len(good) == 0 {
		return nil, fmt.Errorf("%w: no CRL could be read", ErrRevoked)
	}
	return good, nil
}

func (c *CRL) reload(name string) {
	f := c.files[name]
	if f == nil {
		f = &crlFile{}
		c.files[name] = f
	}
	st, err := os.Stat(name)
	if err != nil {
		f.err = fmt.Errorf("CRL %s: %w", name, err)
		return
	}
	if f.list != nil && unchanged(f.last, st) {
		return
	}
	b, err := os.ReadFile(name)
	if err == nil {
		var l *x509.RevocationList
		l, err = ParseCRL(b)
		if err == nil {
			f.list, f.last, f.err = l, st, nil
			f.signed = map[string]bool{}
			f.serials = make(map[string]bool, len(l.RevokedCertificateEntries))
			for _, e := range l.RevokedCertificateEntries {
				f.serials[e.SerialNumber.String()] = true
			}
			return
		}
	}
	f.err = fmt.Errorf("CRL %s: %w", name, err)
}

// ParseCRL reads a CRL in DER or PEM ("X509 CRL") form.
func ParseCRL(b []byte) (*x509.RevocationList, error) {
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type != "X509 CRL" {
			return nil, fmt.Errorf("PEM block %q, want X509 CRL", printable(blk.Type))
		}
		b = blk.Bytes
	}
	return x509.ParseRevocationList(b)
}
