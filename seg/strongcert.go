package seg

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/segkcd/segkcd/internal/certname"
	"github.com/segkcd/segkcd/internal/sid"
)

// CertificateMapping says how strongly a device certificate must be bound to
// the account its name resolves to, as Windows domain controllers'
// StrongCertificateBindingEnforcement does for PKINIT and Schannel logons
// (KB5014754). The gateway's own path (S4U2Self by name) never shows the DC
// the certificate, so the gateway is where this is enforced.
//
// In every mode a certificate that carries a SID (the SID extension or the
// SAN URI) is refused when the SID is not the resolved account's (what
// Windows logs as event 41): a certificate that names another account is
// never served, whatever the mode.
type CertificateMapping int

const (
	// MappingFull (the zero value, the default) requires a strong mapping:
	// the certificate carries the account's SID, or matches one of the
	// account's strong altSecurityIdentities entries (X509:<I>…<SR>…,
	// X509:<SKI>…, X509:<SHA1-PUKEY>…), read through
	// CertificateAuth.Directory. Microsoft's default since February 2025,
	// and the only mode Windows DCs support since September 2025.
	MappingFull CertificateMapping = iota
	// MappingCompatibility serves a certificate without a SID (counted and
	// logged once per certificate); one issued before its account was
	// created is refused when CertificateAuth.Directory says when that was
	// (Windows' event 40).
	MappingCompatibility
	// MappingOff requires nothing beyond a matching SID where the
	// certificate carries one.
	MappingOff
)

// String is the mode as configuration writes it.
func (m CertificateMapping) String() string {
	switch m {
	case MappingFull:
		return "full"
	case MappingCompatibility:
		return "compatibility"
	case MappingOff:
		return "off"
	}
	return fmt.Sprintf("CertificateMapping(%d)", int(m))
}

// ParseCertificateMapping reads "full", "compatibility" or "off" ("" is
// full).
func ParseCertificateMapping(s string) (CertificateMapping, error) {
	switch s {
	case "", "full":
		return MappingFull, nil
	case "compatibility":
		return MappingCompatibility, nil
	case "off":
		return MappingOff, nil
	}
	return 0, fmt.Errorf("seg: certificate mapping %q is not full, compatibility or off", printable(s))
}

// CertificateDirectory reads what the directory keeps about an account's
// certificates: its altSecurityIdentities values and when it was created
// (whenCreated). *ad.Conn is one.
type CertificateDirectory interface {
	CertificateMappings(ctx context.Context, sid string) (altSecurityIdentities []string, created time.Time, err error)
}

var (
	// ErrSIDMismatch is matched (with ErrBadCredentials) when the
	// certificate carries another account's SID than the one its name
	// resolves to (Windows' event 41).
	ErrSIDMismatch = errors.New("seg: the certificate's SID is not the account's")
	// ErrNoStrongMapping is matched (with ErrBadCredentials) in
	// MappingFull when the certificate carries no SID and matches none of
	// the account's strong altSecurityIdentities (Windows' event 39).
	ErrNoStrongMapping = errors.New("seg: the certificate is not strongly mapped to its account (no SID, no strong altSecurityIdentities entry)")
	// ErrCertificatePredatesAccount is matched (with ErrBadCredentials)
	// when a weakly mapped certificate was issued before its account was
	// created (Windows' event 40).
	ErrCertificatePredatesAccount = errors.New("seg: the certificate was issued before its account was created")
	// ErrBadSIDExtension is matched by the errors of ParseSIDExtension and
	// SIDFromURI, and (with ErrBadCredentials) by a certificate whose SID
	// extension or SAN URI cannot be read.
	ErrBadSIDExtension = errors.New("seg: malformed SID in the certificate")
)

var (
	oidSIDExtension = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 25, 2}
	oidSIDOtherName = certname.OIDSIDOtherName
)

// sidURIPrefix is the SAN URI form of a SID (KB5014754, Intune, ADCS).
const sidURIPrefix = certname.SIDURIPrefix

// ParseSIDExtension reads the value of the SID extension (OID
// 1.3.6.1.4.1.311.25.2, szOID_NTDS_CA_SECURITY_EXT): a SEQUENCE of one
// otherName of type 1.3.6.1.4.1.311.25.2.1 whose [0] holds the SID as text in
// an OCTET STRING. It returns the SID, or an error matching
// ErrBadSIDExtension for anything else (other entries, trailing bytes, two
// SIDs, a SID not written as the PAC writes it).
func ParseSIDExtension(der []byte) (string, error) {
	bad := func(why string) (string, error) {
		return "", errorf("%w: SID extension: %s", ErrBadSIDExtension, why)
	}
	var seq asn1.RawValue
	rest, err := asn1.Unmarshal(der, &seq)
	if err != nil || len(rest) > 0 || seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound {
		return bad("not one SEQUENCE")
	}
	found := ""
	for b := seq.Bytes; len(b) > 0; {
		var on asn1.RawValue
		if b, err = asn1.Unmarshal(b, &on); err != nil {
			return bad("a malformed entry")
		}
		oid, inner, ok, err := certname.OtherNameID(on)
		switch {
		case !ok && err == nil:
			return bad("an entry that is not an otherName")
		case err != nil || !oid.Equal(oidSIDOtherName):
			return bad("an otherName that is not a SID")
		}
		v, err := certname.OtherNameValue(inner)
		if err != nil {
			return bad("the SID's [0] is missing or holds more than one value")
		}
		if v.Class != asn1.ClassUniversal || v.Tag != asn1.TagOctetString || v.IsCompound {
			return bad("the SID is not one OCTET STRING")
		}
		s, err := sid.Parse(string(v.Bytes))
		if err != nil {
			return bad("the value is not a SID")
		}
		if found != "" {
			return bad("more than one SID")
		}
		found = s
	}
	if found == "" {
		return bad("no SID")
	}
	return found, nil
}

// MarshalSIDExtension is the value of a SID extension for s, as ADCS writes
// it (for CAs and tests that issue device certificates).
func MarshalSIDExtension(s string) ([]byte, error) {
	if _, err := sid.Parse(s); err != nil {
		return nil, errorf("%w: %q", ErrBadSIDExtension, printable(s))
	}
	return certname.MarshalSIDExtension(s)
}

// SIDURI is the SAN URI that carries s (tag:microsoft.com,2022-09-14:sid:s).
func SIDURI(s string) string { return sidURIPrefix + s }

// SIDFromURI reads a SAN URI: ok is false for a URI that is not of the SID
// form; a URI of that form whose SID is malformed is an error matching
// ErrBadSIDExtension.
func SIDFromURI(uri string) (s string, ok bool, err error) {
	if len(uri) < len(sidURIPrefix) || !equalASCII(uri[:len(sidURIPrefix)], sidURIPrefix) {
		return "", false, nil
	}
	s, err = sid.Parse(uri[len(sidURIPrefix):])
	if err != nil {
		return "", true, errorf("%w: SAN URI", ErrBadSIDExtension)
	}
	return s, true, nil
}

// CertificateSID returns the SID a certificate carries, from its SID
// extension and its SAN URIs (each may be absent; where both are present
// they must agree). "" means none. A malformed or contradictory SID is an
// error matching ErrBadSIDExtension.
func CertificateSID(c *x509.Certificate) (string, error) { return certificateSID(c, true) }

// certificateSID is CertificateSID, with the SAN URIs read or not.
func certificateSID(c *x509.Certificate, uris bool) (string, error) {
	found := ""
	add := func(s string) error {
		if found != "" && found != s {
			return errorf("%w: the certificate carries two different SIDs", ErrBadSIDExtension)
		}
		found = s
		return nil
	}
	for _, e := range c.Extensions {
		if !e.Id.Equal(oidSIDExtension) {
			continue
		}
		s, err := ParseSIDExtension(e.Value)
		if err != nil {
			return "", err
		}
		if err := add(s); err != nil {
			return "", err
		}
	}
	for _, u := range c.URIs {
		if !uris {
			break
		}
		s, ok, err := SIDFromURI(u.String())
		if err != nil {
			return "", err
		}
		if ok {
			if err := add(s); err != nil {
				return "", err
			}
		}
	}
	return found, nil
}

// strongAltSecID reports whether one altSecurityIdentities value is a strong
// mapping of c: issuer and serial number (the serial's bytes reversed, as
// Windows writes it), subject key identifier, or SHA-1 of the public key.
// Weak forms (subject, issuer and subject, RFC 822) never match.
func strongAltSecID(v string, c *x509.Certificate) bool {
	rest, ok := cutPrefixFold(v, "X509:")
	if !ok {
		return false
	}
	switch {
	case hasPrefixFold(rest, "<SKI>"):
		want, err := hex.DecodeString(strings.TrimSpace(rest[len("<SKI>"):]))
		return err == nil && len(want) > 0 && bytes.Equal(want, c.SubjectKeyId)
	case hasPrefixFold(rest, "<SHA1-PUKEY>"):
		want, err := hex.DecodeString(strings.TrimSpace(rest[len("<SHA1-PUKEY>"):]))
		if err != nil || len(want) != sha1.Size {
			return false
		}
		// MS-PKCA says "SHA1 hash of public key"; Windows tools write the
		// certificate's SHA-1 thumbprint. Each binds the certificate's key
		// and nothing an enrollee chooses, so either is taken.
		for _, b := range [][]byte{c.Raw, c.RawSubjectPublicKeyInfo, publicKeyBits(c)} {
			if h := sha1.Sum(b); b != nil && bytes.Equal(h[:], want) {
				return true
			}
		}
		return false
	case hasPrefixFold(rest, "<I>"):
		issuer, serial, ok := strings.Cut(rest[len("<I>"):], "<SR>")
		if !ok || strings.Contains(issuer, "<S>") {
			return false // X509:<I>…<S>… is weak
		}
		sr, err := hex.DecodeString(strings.TrimSpace(serial))
		if err != nil || len(sr) == 0 || !sameIssuer(issuer, c) {
			return false
		}
		return sameSerial(sr, c)
	}
	return false
}

// sameSerial compares a serial number as altSecurityIdentities writes it
// (the bytes of the certificate's DER INTEGER in reverse order, as Windows
// keeps CERT_INFO.SerialNumber: little-endian, with the sign byte of a
// serial whose top bit is set) with the certificate's, exactly: the DER
// sign byte may be there or not, and nothing else may differ (no other
// zero is dropped, at either end).
func sameSerial(reversed []byte, c *x509.Certificate) bool {
	if c.SerialNumber == nil || c.SerialNumber.Sign() <= 0 {
		return false
	}
	be := make([]byte, len(reversed))
	for i, b := range reversed {
		be[len(be)-1-i] = b
	}
	if len(be) > 1 && be[0] == 0 && be[1]&0x80 != 0 {
		be = be[1:] // the DER sign byte
	}
	return bytes.Equal(be, c.SerialNumber.Bytes())
}

// publicKeyBits is the subjectPublicKey BIT STRING's content.
func publicKeyBits(c *x509.Certificate) []byte {
	var spki struct {
		Algorithm asn1.RawValue
		Key       asn1.BitString
	}
	if _, err := asn1.Unmarshal(c.RawSubjectPublicKeyInfo, &spki); err != nil {
		return nil
	}
	return spki.Key.Bytes
}

// sameIssuer compares an issuer DN as altSecurityIdentities writes it
// ("DC=com,DC=corp,CN=Corp CA": most significant first, the order of the
// certificate's own RDNs, which is how Windows writes it) with the
// certificate's issuer, attribute by attribute, ASCII letters of the values
// folded. The reverse order is not taken: a CA named in reverse is another
// CA. Any CA the TLS server trusts for devices (ClientCAs) with this name
// matches, as any CA in NTAuth does for a Windows DC: trust only device CAs
// that are yours.
func sameIssuer(dn string, c *x509.Certificate) bool {
	var want []string
	for _, part := range splitDN(dn) {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return false
		}
		want = append(want, dnKey(strings.TrimSpace(k))+"="+foldASCII(strings.TrimSpace(v)))
	}
	var have []string
	for _, atv := range c.Issuer.Names {
		v, ok := atv.Value.(string)
		if !ok {
			return false
		}
		have = append(have, dnKey(atv.Type.String())+"="+foldASCII(v))
	}
	if len(want) != len(have) || len(want) == 0 {
		return false
	}
	for i := range want {
		if want[i] != have[i] {
			return false
		}
	}
	return true
}

// dnKey names an attribute type as Windows' DN strings do.
func dnKey(k string) string {
	switch foldASCII(k) {
	case "2.5.4.3":
		return "CN"
	case "2.5.4.10":
		return "O"
	case "2.5.4.11":
		return "OU"
	case "2.5.4.6":
		return "C"
	case "2.5.4.7":
		return "L"
	case "2.5.4.8", "S":
		return "ST"
	case "0.9.2342.19200300.100.1.25":
		return "DC"
	case "1.2.840.113549.1.9.1", "EMAIL":
		return "E"
	}
	return foldASCII(k)
}

// splitDN splits a DN string at the commas that separate its attributes
// (not at an escaped "\," or inside quotes).
func splitDN(dn string) []string {
	var out []string
	var cur strings.Builder
	quoted, escaped := false, false
	for _, r := range dn {
		switch {
		case escaped:
			escaped = false
		case r == '\\':
			escaped = true
			continue
		case r == '"':
			quoted = !quoted
			continue
		case (r == ',' || r == '\r' || r == '\n') && !quoted:
			if s := strings.TrimSpace(cur.String()); s != "" {
				out = append(out, s)
			}
			cur.Reset()
			continue
		}
		cur.WriteRune(r)
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && equalASCII(s[:len(prefix)], prefix)
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if !hasPrefixFold(s, prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

// certDirectoryCache remembers the directory's answers per SID for a few
// minutes: a device's every request must not cost an LDAP search.
type certDirectoryCache struct {
	mu      sync.Mutex
	entries map[string]certDirectoryEntry
}

type certDirectoryEntry struct {
	alt     []string
	created time.Time
	expires time.Time
}

const (
	certDirectoryTTL = 5 * time.Minute
	certDirectoryMax = 100000
)

func (d *certDirectoryCache) get(ctx context.Context, dir CertificateDirectory, sid string) ([]string, time.Time, error) {
	now := time.Now()
	d.mu.Lock()
	e, ok := d.entries[sid]
	d.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.alt, e.created, nil
	}
	alt, created, err := dir.CertificateMappings(ctx, sid)
	if err != nil {
		return nil, time.Time{}, err
	}
	d.mu.Lock()
	if d.entries == nil || len(d.entries) >= certDirectoryMax {
		d.entries = map[string]certDirectoryEntry{}
	}
	d.entries[sid] = certDirectoryEntry{alt: alt, created: created, expires: now.Add(certDirectoryTTL)}
	d.mu.Unlock()
	return alt, created, nil
}

// seenCerts remembers which weakly mapped certificates were logged, so
// that compatibility mode logs each device once, not each request.
type seenCerts struct {
	mu   sync.Mutex
	seen map[[32]byte]struct{}
}

const seenCertsMax = 100000

// first reports whether c is seen for the first time (since the set last
// filled up).
func (s *seenCerts) first(c *x509.Certificate) bool {
	k := sha256.Sum256(c.Raw)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.seen[k]; ok {
		return false
	}
	if s.seen == nil || len(s.seen) >= seenCertsMax {
		s.seen = map[[32]byte]struct{}{}
	}
	s.seen[k] = struct{}{}
	return true
}
