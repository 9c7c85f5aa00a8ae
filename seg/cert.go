package seg

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/segkcd/segkcd/internal/certname"
	"github.com/segkcd/segkcd/kerberos"
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
//
// The user is the account that holds the certificate's UPN, as the domain's
// KDC resolves it (Names.Accounts), never the UPN's prefix. A UPN is a weak
// mapping (KB5014754): an MDM CA that lets an enrollee choose the UPN in its
// SAN hands every enrollee every mailbox. So the certificate must also be
// bound to that account strongly (Mapping, full by default): it carries the
// account's SID, which the PAC confirms, or matches a strong
// altSecurityIdentities entry of the account (Directory).
type CertificateAuth struct {
	// Sources are tried in order; the first that holds a name wins. Empty
	// means FromUPN only: the UPN is what an MDM's CA writes for the user.
	// FromEmail and FromCommonName are weaker and must be asked for: an
	// e-mail address is resolved as a UPN, which it often is not, and a
	// machine or Wi-Fi certificate from the same CA whose CN happens to be
	// "administrator" would log in as that account.
	Sources []NameSource
	// Names maps the certificate's name to the account. The zero value
	// means the Names of the ProxyHandler it authenticates for.
	Names Names
	// Revocation, when set, refuses revoked certificates.
	Revocation *CRL
	// TrustedIssuers, when set, are the only CAs whose certificates log in:
	// the certificate's issuing CA (its verified chain's second link) must
	// be one of them, byte for byte. Since 2025 Windows DCs accept a
	// certificate logon only from a CA in the forest's NTAuthCertificates
	// (CVE-2025-26647, KB5057784); filled from ad.Conn.NTAuthCertificates,
	// it holds the gateway to the same rule, where the TLS layer trusts
	// whatever CA files it was given.
	TrustedIssuers []*x509.Certificate
	// Mapping is how strongly the certificate must be bound to its account
	// (default MappingFull). A certificate whose SID is another account's
	// is refused in every mode.
	Mapping CertificateMapping
	// SIDExtensionOnly takes the SID from the SID extension only, never from
	// a SAN URI. A CA that lets its enrollees write their own SAN (the case
	// strong mapping exists for) lets them write any SID URI too, where
	// the SID extension is the CA's own (ADCS writes it from the
	// requester's account). Windows DCs take both; so does the default.
	SIDExtensionOnly bool
	// Directory, when set, gives each account's altSecurityIdentities (a
	// strong mapping for certificates without a SID, in MappingFull) and
	// its creation time (a weakly mapped certificate issued before it is
	// refused, in MappingCompatibility). An *ad.Conn over LDAPS.
	Directory CertificateDirectory
	// BackdatingCompensation is how much earlier than its account a weakly
	// mapped certificate may be dated (default 10 minutes: Windows CAs date
	// certificates back by their ClockSkewMinutes, 10 by default, so a
	// certificate issued right after its account was created starts before
	// it). Windows DCs have a setting for the same allowance
	// (CertificateBackdatingCompensation).
	BackdatingCompensation time.Duration
	// WeakMaxAge bounds how old the directory's answer for the name of a
	// weakly mapped certificate (one served without a SID, in
	// compatibility or off) may be (default 5 minutes): such a certificate
	// carries nothing but the name, so a UPN moved to another account must
	// reach it soon, not after Accounts.TTL. It costs one S4U2Self per such
	// name and WeakMaxAge.
	WeakMaxAge time.Duration
	// Metrics, when set, counts the mappings by result
	// (seg_certificate_mappings_total).
	Metrics *Metrics
	// Logger receives refused mappings, and each weakly mapped certificate
	// once (default slog.Default()).
	Logger *slog.Logger

	dir  certDirectoryCache
	seen seenCerts
}

// Authenticate implements ProxyHandler.Authenticate.
func (a *CertificateAuth) Authenticate(r *http.Request) (*Identity, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, ErrNoCredentials
	}
	if len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil, errorf("%w: the client certificate's chain was not verified (set tls.Config.ClientCAs and ClientAuth)", ErrBadCredentials)
	}
	chain := r.TLS.VerifiedChains[0]
	if len(a.TrustedIssuers) > 0 {
		// The first verified chain through a trusted issuer: a CA
		// certificate cross-signed or renewed with the same key gives the
		// leaf several chains, and the device's order of intermediates
		// decides which comes first.
		trusted := false
		for _, c := range r.TLS.VerifiedChains {
			if issuedByOneOf(c, a.TrustedIssuers) {
				chain, trusted = c, true
				break
			}
		}
		if !trusted {
			return nil, errorf("%w: the certificate's CA %q is not among the trusted issuers (NTAuthCertificates)", ErrBadCredentials,
				printable(issuerName(chain)))
		}
	}
	leaf := chain[0]
	if a.Revocation != nil {
		if err := a.Revocation.Check(chain); err != nil {
			return nil, errorf("%w: %w", ErrBadCredentials, err)
		}
	}
	sources := a.Sources
	if len(sources) == 0 {
		sources = []NameSource{FromUPN}
	}
	for _, s := range sources {
		name, err := certName(leaf, s)
		if err != nil {
			return nil, errorf("%w: certificate %s: %v", ErrBadCredentials, s, err)
		}
		if name == "" {
			continue
		}
		acct, err := namesFor(r.Context(), &a.Names).Resolve(r.Context(), name)
		if errors.Is(err, ErrBadName) {
			err = errorf("%w: certificate %s: %w", ErrBadCredentials, s, err)
		}
		if err != nil {
			return nil, &loginError{who: printable(name), err: err}
		}
		if acct, err = a.bind(r.Context(), leaf, name, acct); err != nil {
			return nil, &loginError{who: printable(name), err: err}
		}
		id := identity(acct, name, "certificate")
		id.Certificate = leaf
		return id, nil
	}
	return nil, errorf("%w: the certificate names no user (%v)", ErrBadCredentials, sources)
}

// bind checks that leaf is bound to acct as Mapping requires, and returns the
// account it is bound to: a certificate whose SID is not the remembered
// account's has its name asked about again first, in case AD gave the name
// to the SID's account since (a UPN moved).
func (a *CertificateAuth) bind(ctx context.Context, leaf *x509.Certificate, name string, acct *kerberos.Account) (*kerberos.Account, error) {
	certSID, err := certificateSID(leaf, !a.SIDExtensionOnly)
	if err != nil {
		return nil, a.refuse(ctx, "malformed", leaf, acct, errorf("%w: %w", ErrBadCredentials, err))
	}
	if certSID != "" && certSID != acct.SID {
		fresh, ferr := namesFor(ctx, &a.Names).Refresh(ctx, name)
		if ferr != nil || fresh.SID != certSID {
			return nil, a.refuse(ctx, "sid_mismatch", leaf, acct, errorf("%w: %w (the certificate carries %s, its name belongs to %s)",
				ErrBadCredentials, ErrSIDMismatch, certSID, acct.SID))
		}
		acct = fresh
	}
	switch {
	case certSID != "":
		a.Metrics.certMapping("strong_sid")
		return acct, nil
	case a.Mapping == MappingFull:
		if a.Directory != nil {
			alt, _, err := a.dir.get(ctx, a.Directory, acct.SID)
			if err != nil {
				return nil, fmt.Errorf("seg: reading the account's certificate mappings: %w", err)
			}
			for _, v := range alt {
				if strongAltSecID(v, leaf) {
					a.Metrics.certMapping("strong_alt_security_identities")
					return acct, nil
				}
			}
		}
		return nil, a.refuse(ctx, "no_strong_mapping", leaf, acct, errorf("%w: %w", ErrBadCredentials, ErrNoStrongMapping))
	}
	// Compatibility and off: served without a strong mapping, for the
	// name's holder as the directory said it at most WeakMaxAge ago.
	if acct, err = namesFor(ctx, &a.Names).Fresh(ctx, name, positiveOr(a.WeakMaxAge, 5*time.Minute)); err != nil {
		return nil, weakNameError(err)
	}
	if a.Mapping == MappingCompatibility {
		// Unless the directory says the account is younger than the
		// certificate; logged once per certificate.
		if a.Directory != nil {
			_, created, err := a.dir.get(ctx, a.Directory, acct.SID)
			if err != nil {
				return nil, fmt.Errorf("seg: reading the account's creation time: %w", err)
			}
			if !created.IsZero() && leaf.NotBefore.Before(created.Add(-positiveOr(a.BackdatingCompensation, 10*time.Minute))) {
				return nil, a.refuse(ctx, "predates_account", leaf, acct, errorf("%w: %w (issued %s, account created %s)",
					ErrBadCredentials, ErrCertificatePredatesAccount, leaf.NotBefore.UTC().Format(time.RFC3339), created.UTC().Format(time.RFC3339)))
			}
		}
		if a.seen.first(leaf) {
			a.log(ctx, "certificate served without a strong mapping (no SID): have the MDM's CA put the account's SID in its certificates",
				"weak_served", leaf, acct)
		}
	}
	a.Metrics.certMapping("weak_served")
	return acct, nil
}

// refuse counts and logs a refused mapping, with what an administrator
// needs to find the device and its CA, and returns err.
func (a *CertificateAuth) refuse(ctx context.Context, result string, leaf *x509.Certificate, acct *kerberos.Account, err error) error {
	a.Metrics.certMapping(result)
	a.log(ctx, "certificate refused", result, leaf, acct, slog.String("error", err.Error()), slog.String("hint", certHint(result)))
	return err
}

// log writes a line about a certificate's mapping, at Warn.
func (a *CertificateAuth) log(ctx context.Context, msg, result string, leaf *x509.Certificate, acct *kerberos.Account, more ...slog.Attr) {
	attrs := append([]slog.Attr{slog.String("result", result), slog.String("mode", a.Mapping.String()),
		slog.String("user", acct.User), slog.String("sid", acct.SID),
		slog.String("issuer", printable(leaf.Issuer.String())), slog.String("serial", leaf.SerialNumber.Text(16))}, more...)
	logOr(a.Logger).LogAttrs(ctx, slog.LevelWarn, msg, attrs...)
}

// weakNameError is the error of a weakly mapped certificate's name asked
// about again: refused by the directory, or not answered.
func weakNameError(err error) error {
	if errors.Is(err, ErrBadName) {
		return errorf("%w: certificate: %w", ErrBadCredentials, err)
	}
	return err
}

func certHint(result string) string {
	switch result {
	case "sid_mismatch":
		return "the certificate carries another account's SID than the account its name belongs to: a certificate issued to someone else, or a UPN moved to another account (Windows logs event 41)"
	case "no_strong_mapping":
		return "the certificate carries no SID (extension 1.3.6.1.4.1.311.25.2 or SAN URI tag:microsoft.com,2022-09-14:sid:) and matches no strong altSecurityIdentities entry; reissue it with the SID, add X509:<I>issuer<SR>serial to the account, or set the mapping to compatibility (Windows logs event 39)"
	case "predates_account":
		return "the certificate was issued before its account was created: it was meant for an earlier holder of the name (Windows logs event 40)"
	case "malformed":
		return "the certificate's SID extension or SID URI cannot be read"
	}
	return ""
}

func certName(c *x509.Certificate, s NameSource) (string, error) {
	switch s {
	case FromUPN:
		for _, e := range c.Extensions {
			if e.Id.Equal(oidSAN) {
				upns, err := certname.ParseUPNs(e.Value)
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

// oidSAN is subjectAltName's.
var oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}

// CRL refuses certificates listed in certificate revocation lists read from
// files, each signed by one of the device CAs. Every certificate of the
// verified chain below its trust anchor is checked against a CRL of its
// issuer: the device's against the issuing CA's CRL, an intermediate CA's
// against its parent's, so that a revoked intermediate cannot go on
// vouching for devices. A certificate whose issuer has no CRL among Files is
// refused (fail closed, as SEG requires a CRL for the device CA).
//
// A CRL past its nextUpdate is stale: a newer one may list certificates this
// one does not. Logins checked against a stale CRL are refused by default;
// AllowStale accepts them instead. Either way each is counted
// (seg_crl_stale_total) and the staleness is logged once per file.
//
// A file is read again when its modification time or size changes (checked
// at most once per second), so an MDM can replace it in place. A CRL whose
// signature does not verify against the CA that issued the certificate does
// not count. A file that cannot be read or parsed keeps its last good
// contents and the error is returned by Err; before any good read, every
// certificate is refused (fail closed).
type CRL struct {
	// Files are DER or PEM CRLs.
	Files []string
	// AllowStale accepts certificates checked against a CRL past its
	// nextUpdate, with a warning, instead of refusing them. It is weaker:
	// a certificate revoked since the stale CRL was issued is accepted.
	AllowStale bool
	// Logger receives the staleness warnings (default slog.Default()).
	Logger *slog.Logger
	// Metrics, when set, counts logins checked against a stale CRL.
	Metrics *Metrics

	mu      sync.Mutex
	checked time.Time
	files   map[string]*crlFile
}

type crlFile struct {
	name    string
	last    os.FileInfo // of the last good read
	list    *x509.RevocationList
	serials map[string]bool // revoked serial numbers, as big.Int.String
	// signed remembers the signature check per issuer certificate (its DER),
	// so that each request costs a map lookup, not an ECDSA or RSA verify.
	signed map[string]bool
	err    error
	warned bool // the staleness of this list was logged
}

// ErrRevoked is matched by the error for a revoked certificate, and for one
// that no usable CRL covers.
var ErrRevoked = errors.New("seg: certificate revoked")

// ErrStaleCRL is matched by the error for a certificate refused because the
// CRL that covers it is past its nextUpdate.
var ErrStaleCRL = errors.New("seg: CRL past its nextUpdate")

// Check refuses chain[0] when a CRL of its issuer lists it, and each CA
// certificate below the chain's last (its trust anchor) likewise.
func (c *CRL) Check(chain []*x509.Certificate) error {
	if len(chain) < 2 {
		return errorf("%w: certificate chain too short for a revocation check", ErrBadCredentials)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	files, err := c.current()
	if err != nil {
		return err
	}
	now := time.Now()
	for i := 0; i+1 < len(chain); i++ {
		if err := c.checkOne(files, chain[i], chain[i+1], now); err != nil {
			return err
		}
	}
	return nil
}

// checkOne checks cert against its issuer's CRLs. c.mu is held.
func (c *CRL) checkOne(files []*crlFile, cert, issuer *x509.Certificate, now time.Time) error {
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
		if f.serials[cert.SerialNumber.String()] {
			return errorf("%w: serial %s by %s", ErrRevoked, cert.SerialNumber, printable(issuer.Subject.CommonName))
		}
		if next := f.list.NextUpdate; !next.IsZero() && now.After(next) {
			c.Metrics.staleCRL(c.AllowStale)
			if !f.warned {
				f.warned = true
				logOr(c.Logger).Warn("device CRL past its nextUpdate", "file", f.name, "issuer", printable(issuer.Subject.CommonName),
					"next_update", next, "refusing", !c.AllowStale)
			}
			if !c.AllowStale {
				return errorf("%w: %s's CRL (%s) was due for renewal at %s", ErrStaleCRL,
					printable(issuer.Subject.CommonName), f.name, next.UTC().Format(time.RFC3339))
			}
		}
	}
	if !found {
		return errorf("%w: no CRL from %s", ErrRevoked, printable(issuer.Subject.CommonName))
	}
	return nil
}

// Stale reports the CRLs past their nextUpdate (for readiness checks).
func (c *CRL) Stale() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	files, err := c.current()
	if err != nil {
		return nil
	}
	var out []string
	now := time.Now()
	for _, f := range files {
		if next := f.list.NextUpdate; !next.IsZero() && now.After(next) {
			out = append(out, f.name)
		}
	}
	return out
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
		return nil, errorf("%w: no CRL could be read", ErrRevoked)
	}
	return good, nil
}

func (c *CRL) reload(name string) {
	f := c.files[name]
	if f == nil {
		f = &crlFile{name: name}
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
		l, err = parseCRL(b)
		if err == nil {
			f.list, f.last, f.err, f.warned = l, st, nil, false
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

// parseCRL reads a CRL in DER or PEM ("X509 CRL") form.
func parseCRL(b []byte) (*x509.RevocationList, error) {
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type != "X509 CRL" {
			return nil, fmt.Errorf("PEM block %q, want X509 CRL", printable(blk.Type))
		}
		b = blk.Bytes
	}
	return x509.ParseRevocationList(b)
}

// issuedByOneOf reports whether chain's issuing CA, the certificate after
// the leaf, is one of cas.
func issuedByOneOf(chain []*x509.Certificate, cas []*x509.Certificate) bool {
	if len(chain) < 2 {
		return false
	}
	for _, ca := range cas {
		if ca != nil && bytes.Equal(ca.Raw, chain[1].Raw) {
			return true
		}
	}
	return false
}

// issuerName is the leaf's issuer as its chain names it.
func issuerName(chain []*x509.Certificate) string {
	if len(chain) < 2 {
		return chain[0].Issuer.String()
	}
	return chain[1].Subject.String()
}
