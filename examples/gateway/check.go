package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	krb5config "github.com/jcmturner/gokrb5/v8/config"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/examples/internal/siteconfig"
	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/seg"
)

// checker runs -check: every part of the configuration that can be tried
// without serving, one line each. No listener is opened and nothing is
// changed; the only outside effects are the KDC exchanges, the TLS
// handshakes to Exchange and the policy's HTTP GET.
type checker struct {
	c      *config
	plain  bool
	user   string // -check-user: also get a ticket as this user (S4U)
	cert   string // -check-cert: a device certificate to map as a login would
	out    io.Writer
	now    time.Time
	failed bool

	kcfg     *krb5config.Config
	svc      *kerberos.Client
	loggedIn bool // the service account got its TGT
}

// soon is how close to its end a certificate is reported.
const soon = 30 * 24 * time.Hour

// line prints one result: ok, WARN (passes) or FAIL, with a hint on failure.
func (k *checker) line(name string, detail string, err error, hint string) {
	switch {
	case err != nil:
		k.failed = true
		fmt.Fprintf(k.out, "FAIL %s: %v\n", name, err)
		if hint != "" {
			fmt.Fprintf(k.out, "     hint: %s\n", hint)
		}
	case strings.HasPrefix(detail, "WARN "):
		fmt.Fprintf(k.out, "WARN %s: %s\n", name, strings.TrimPrefix(detail, "WARN "))
		if hint != "" {
			fmt.Fprintf(k.out, "     hint: %s\n", hint)
		}
	default:
		fmt.Fprintf(k.out, "ok   %s: %s\n", name, detail)
	}
}

// check runs every check and reports whether all passed.
func (k *checker) check(ctx context.Context) bool {
	k.now = time.Now()
	k.line("config", "read and valid", nil, "")
	if !k.plain {
		k.certificate()
	}
	k.deviceCAs()
	k.crls()
	if k.kerberosConfig() && k.serviceAccount() {
		k.tickets(ctx)
	}
	k.certMapping(ctx)
	k.channelBindings()
	k.upstreams(ctx)
	k.policy(ctx)
	if k.c.Roll != nil {
		k.roll(ctx)
	}
	return !k.failed
}

// validity describes a certificate's remaining life, as a WARN when it is
// near its end, or an error when it is outside it.
func (k *checker) validity(c *x509.Certificate) (string, error) {
	name := c.Subject.CommonName
	if name == "" && len(c.DNSNames) > 0 {
		name = c.DNSNames[0]
	}
	switch left := c.NotAfter.Sub(k.now); {
	case k.now.Before(c.NotBefore):
		return "", fmt.Errorf("%q is not valid before %s", name, c.NotBefore.UTC().Format(time.DateOnly))
	case left <= 0:
		return "", fmt.Errorf("%q expired on %s", name, c.NotAfter.UTC().Format(time.DateOnly))
	case left < soon:
		return fmt.Sprintf("WARN %q expires on %s, in %d days", name, c.NotAfter.UTC().Format(time.DateOnly), int(left.Hours()/24)), nil
	default:
		return fmt.Sprintf("%q valid until %s (%d days)", name, c.NotAfter.UTC().Format(time.DateOnly), int(left.Hours()/24)), nil
	}
}

func (k *checker) certificate() {
	pair, err := tls.LoadX509KeyPair(k.c.TLSCert, k.c.TLSKey)
	if err != nil {
		k.line("tls_cert", "", err, "tls_cert and tls_key must be the PEM certificate chain and its key")
		return
	}
	d, err := k.validity(pair.Leaf)
	k.line("tls_cert", d, err, "renew the certificate devices see, then send the gateway SIGHUP")
}

func (k *checker) deviceCAs() {
	for _, f := range k.c.ClientCAFiles {
		certs, err := readCerts(f)
		if err != nil {
			k.line("client_ca_files "+f, "", err, "")
			continue
		}
		for _, c := range certs {
			d, err := k.validity(c)
			k.line("client_ca_files "+f, d, err, "a device CA past its end refuses every device it issued")
		}
	}
}

func (k *checker) crls() {
	if len(k.c.CRLFiles) == 0 {
		return
	}
	crl := &seg.CRL{Files: k.c.CRLFiles, Logger: discardLogger()}
	if err := crl.Reload(); err != nil {
		k.line("crl_files", "", err, "each file must be a DER or PEM CRL of a device CA")
		return
	}
	stale := crl.Stale()
	switch {
	case len(stale) == 0:
		k.line("crl_files", fmt.Sprintf("%d read, none past its nextUpdate", len(k.c.CRLFiles)), nil, "")
	case k.c.CRLStale == "warn":
		k.line("crl_files", "WARN past nextUpdate, accepted (crl_stale: warn): "+strings.Join(stale, ", "), nil,
			"fetch a fresh CRL from the CA and send the gateway SIGHUP")
	default:
		k.line("crl_files", "", fmt.Errorf("past nextUpdate: %s; certificate logins they cover are refused", strings.Join(stale, ", ")),
			"fetch a fresh CRL from the CA and send the gateway SIGHUP (or crl_stale: warn)")
	}
}

func (k *checker) kerberosConfig() bool {
	var err error
	if k.c.Krb5Conf != "" {
		k.kcfg, err = kerberos.LoadConfig(k.c.Krb5Conf)
		k.line("krb5_conf", k.c.Krb5Conf, err, "a krb5.conf with the realm's KDCs")
	} else {
		k.kcfg, err = kerberos.NewConfig(k.c.Realm, k.c.KDCs...)
		k.line("kdcs", strings.Join(k.c.KDCs, ", "), err, "")
	}
	return err == nil
}

func (k *checker) serviceAccount() bool {
	if k.c.KeytabFile != "" {
		kt, err := kerberos.LoadKeytab(k.c.KeytabFile)
		k.line("keytab_file", k.c.KeytabFile, err, "export the service account's keys (ktpass, or samba-tool domain exportkeytab)")
		if err != nil {
			return false
		}
		k.svc = kerberos.NewWithKeytab(k.c.ServiceAccount, k.c.Realm, kt, k.kcfg)
		k.svc.AllowRC4 = k.c.AllowRC4
		return true
	}
	pw, err := k.c.password()
	field := "password_file"
	if k.c.PasswordEnv != "" {
		field = "password_env"
	}
	k.line(field, "set", err, "")
	if err != nil {
		return false
	}
	k.svc = kerberos.NewWithPassword(k.c.ServiceAccount, k.c.Realm, pw, k.kcfg)
	k.svc.AllowRC4 = k.c.AllowRC4
	return true
}

// tickets logs the service account in and gets a ticket to each Exchange
// SPN (as the account itself, which shows the SPN is registered), and with
// -check-user one as that user by S4U2Self and S4U2Proxy, which shows the
// delegation.
func (k *checker) tickets(ctx context.Context) {
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tgt, err := k.svc.TGT(tctx)
	if err != nil {
		k.line("service TGT", "", err, kerberosHint(err, true))
		return
	}
	k.loggedIn = true
	k.line("service TGT", fmt.Sprintf("%s@%s, valid until %s", k.c.ServiceAccount, k.c.Realm, tgt.EndTime.UTC().Format(time.RFC3339)), nil, "")
	// The RC4 cut-off (CVE-2026-20833): the gateway takes AES only, so an
	// RC4 key on the path fails the lines above and below with a hint;
	// this line says what the path's keys are when they pass.
	keys := []string{}
	if kt, err := k.svc.KeyType(tctx); err == nil && kt != 0 {
		keys = append(keys, "the service account's key "+kerberos.ETypeName(kt))
	}
	for _, u := range k.c.upstreams() {
		spn := u.TicketSPN()
		t, err := k.svc.ServiceTicket(tctx, spn)
		k.line("ticket "+spn, "the KDC issues it", err, kerberosHint(err, false))
		if err == nil {
			keys = append(keys, "the ticket to "+spn+" "+kerberos.ETypeName(t.Ticket.EncPart.EType))
		}
		if k.user != "" {
			t, err := k.svc.Impersonate(tctx, k.user, spn)
			d := ""
			if err == nil {
				d = "as " + t.ClientName() + " by S4U2Self and S4U2Proxy"
			}
			k.line("delegation "+spn, d, err, kerberosHint(err, false))
		}
	}
	if k.c.AllowRC4 {
		k.line("rc4_cutoff", "WARN allow_rc4: RC4 tickets and keys are taken ("+strings.Join(keys, ", ")+"); DCs with the July 2026 updates issue none, so fix the accounts and turn it off", nil, "")
		return
	}
	k.line("rc4_cutoff", "AES only: "+strings.Join(keys, ", "), nil, "")
}

// upstreams makes a TLS handshake with each Exchange server, trusting what
// the gateway trusts, and reports its certificate's life.
func (k *checker) upstreams(ctx context.Context) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if k.c.ExchangeCAFile != "" {
		pool, err := siteconfig.Pool(k.c.ExchangeCAFile)
		if err != nil {
			k.line("exchange_ca_file", "", err, "")
			return
		}
		conf.RootCAs = pool
	}
	for _, u := range k.c.upstreams() {
		name := "upstream " + u.URL.Host
		if u.URL.Scheme != "https" {
			k.line(name, "WARN plain HTTP (development only): no TLS to check", nil, "")
			continue
		}
		addr := u.URL.Host
		if u.URL.Port() == "" {
			addr = net.JoinHostPort(u.URL.Hostname(), "443")
		}
		c := conf.Clone()
		c.ServerName = u.URL.Hostname()
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: c}
		dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		conn, err := d.DialContext(dctx, "tcp", addr)
		cancel()
		if err != nil {
			k.line(name, "", err, "check that the gateway reaches Exchange on this port and trusts its certificate (exchange_ca_file)")
			continue
		}
		st := conn.(*tls.Conn).ConnectionState()
		conn.Close()
		detail, err := k.validity(st.PeerCertificates[0])
		if err == nil && !strings.HasPrefix(detail, "WARN ") {
			detail = tls.VersionName(st.Version) + ", " + detail
		}
		k.line(name, detail, err, "renew Exchange's certificate")
		if k.c.ChannelBindings != "off" {
			_, err := kerberos.TLSServerEndPoint(st.PeerCertificates[0])
			k.line("channel_bindings "+u.URL.Host, "tokens are bound to this certificate (tls-server-end-point)", err,
				"Extended Protection needs a certificate signed with RSA or ECDSA and SHA-2; or set channel_bindings off where it is not required")
		}
	}
}

// channelBindings says whether tokens to Exchange carry channel bindings,
// and warns when they do not.
func (k *checker) channelBindings() {
	if k.c.ChannelBindings == "off" {
		k.line("channel_bindings", "WARN off: Negotiate tokens carry no channel binding, and Exchange with Extended Protection "+
			"set to Require (tokenChecking, the default of Exchange 2019 CU14 and later) refuses every request; "+
			"keep it off only for a TLS-inspecting device between the gateway and Exchange", nil, "")
		return
	}
	k.line("channel_bindings", "on: each Negotiate token is bound to its TLS connection to Exchange (Extended Protection)", nil, "")
}

// policy loads the policy file, or fetches the MDM's once.
func (k *checker) policy(ctx context.Context) {
	pc := k.c.Policy
	if pc == nil {
		return
	}
	g := &gateway{c: k.c, log: discardLogger(), handler: &seg.ProxyHandler{}}
	if err := g.setPolicy(k.names()); err != nil {
		k.line("policy", "", err, "")
		return
	}
	if pc.File != "" {
		k.line("policy.file", pc.File+": loaded", nil, "")
		k.unresolved(g.policy)
		return
	}
	// The URL: one fetch, as the gateway's first poll makes it.
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, run := range g.run {
		go run(pctx)
	}
	for {
		if d := g.policy.Decide(seg.PolicyInput{}); d.Rule != "no policy" {
			k.line("policy.url", pc.URL+": loaded", nil, "")
			k.unresolved(g.policy)
			return
		}
		select {
		case <-pctx.Done():
			err := errors.New("no policy loaded from it within 30 s")
			if pc.FailOpen {
				k.line("policy.url", "WARN "+pc.URL+": "+err.Error()+"; devices are let in meanwhile (fail_open)", nil, "")
				return
			}
			k.line("policy.url", "", err, "check the URL, policy.token_file and policy.ca_file; until it loads every device gets 503")
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// names is the gateway's Names, resolving through the service account
// when it logged in (else names resolve to nothing).
func (k *checker) names() seg.Names {
	n := seg.Names{Realm: k.c.Realm, NetBIOS: k.c.NetBIOS, Suffixes: k.c.UPNSuffixes}
	if k.loggedIn {
		n.Accounts = &seg.Accounts{Resolver: k.svc}
	}
	return n
}

// unresolved reports the policy's user entries that name no account: they
// match no one (an allow entry lets no one in, a block entry blocks no one).
func (k *checker) unresolved(p *seg.Policy) {
	if !k.loggedIn {
		k.line("policy.users", "WARN not resolved: the service account did not log in", nil, "")
		return
	}
	u := p.Unresolved()
	if len(u) == 0 {
		k.line("policy.users", "every user entry names an account", nil, "")
		return
	}
	for _, e := range u {
		k.line("policy.users", fmt.Sprintf("WARN %s %q names no account and matches no one: %s", e.Where, e.Entry, e.Reason), nil,
			"correct the entry, or write the account's SID (S-1-5-21-...)")
	}
}

// certMapping says how device certificates are bound to their accounts, and
// with -check-cert maps one as a login would.
func (k *checker) certMapping(ctx context.Context) {
	if len(k.c.ClientCAFiles) == 0 {
		return
	}
	const hint = "KB5014754: a certificate mapped by its UPN alone is weak; an MDM CA that lets an enrollee choose the UPN hands every enrollee every mailbox. Have the CA write the account's SID (extension 1.3.6.1.4.1.311.25.2 or SAN URI tag:microsoft.com,2022-09-14:sid:<SID>), then set cert_mapping to full"
	switch k.c.certMapping {
	case seg.MappingFull:
		k.line("cert_mapping", "full: a device certificate must carry its account's SID, or match a strong altSecurityIdentities entry (cert_directory)", nil, "")
	case seg.MappingCompatibility:
		k.line("cert_mapping", "WARN compatibility: certificates without a SID are served (counted in seg_certificate_mappings_total{result=\"weak_served\"}, logged once each); weaker than full", nil, hint)
	default:
		k.line("cert_mapping", "WARN off: no strong mapping required; weaker than full", nil, hint)
	}
	var dir seg.CertificateDirectory
	if k.c.CertDirectory != nil {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		conn, err := k.c.CertDirectory.Dial(dctx)
		cancel()
		if err != nil {
			k.line("cert_directory", "", err, "check cert_directory's ldap_url, ca_file and bind identity")
		} else {
			defer conn.AD.Close()
			k.line("cert_directory", k.c.CertDirectory.LDAPURL+": bound", nil, "")
			dir = conn.AD
			k.ntauth(ctx, conn.AD)
			k.rc4Attributes(ctx, conn.AD, k.c.ServiceAccount)
		}
	}
	if k.cert == "" {
		return
	}
	certs, err := readCerts(k.cert)
	if err != nil {
		k.line("check-cert", "", err, "")
		return
	}
	leaf := certs[0]
	sid, err := seg.CertificateSID(leaf)
	switch {
	case err != nil:
		k.line("check-cert", "", err, "the certificate's SID extension or SID URI cannot be read: it is refused in every mode")
		return
	case sid == "":
		k.line("check-cert", "WARN "+k.cert+" carries no SID (neither the extension 1.3.6.1.4.1.311.25.2 nor a SAN URI tag:microsoft.com,2022-09-14:sid:)", nil, "")
	default:
		k.line("check-cert", k.cert+" carries the SID "+sid, nil, "")
	}
	if !k.loggedIn {
		return
	}
	// A login as the gateway makes it, without serving: the chain is not
	// verified here (the TLS server does that).
	auth := &seg.CertificateAuth{Sources: k.c.certNames, Names: k.names(), Mapping: k.c.certMapping, Directory: dir,
		SIDExtensionOnly: k.c.CertSIDExtensionOnly, Logger: discardLogger()}
	r, _ := http.NewRequestWithContext(ctx, http.MethodPost, "/", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: certs, VerifiedChains: [][]*x509.Certificate{certs}}
	id, err := auth.Authenticate(r)
	if err != nil {
		k.line("check-cert", "", err, "see the hint of the refusal in the gateway's log for the same certificate")
		return
	}
	k.line("check-cert", fmt.Sprintf("maps to %s (%s) in mode %s", id.User, id.SID, k.c.certMapping), nil, "")
}

// kerberosHint is advice for an administrator on a KDC's answer; svc says
// the error is about the service account's own login.
func kerberosHint(err error, svc bool) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, kerberos.ErrPreauthFailed):
		return "wrong password or keytab for the service account (a password change makes an exported keytab stale)"
	case svc && errors.Is(err, kerberos.ErrClientUnknown):
		return "no such service account in the realm: check service_account and realm"
	case svc && errors.Is(err, kerberos.ErrPolicy):
		return "the KDC refuses the service account: it is disabled, locked out or its password expired"
	}
	e := &seg.Error{Stage: seg.StageTicket, Err: err}
	return e.Hint()
}

func readCerts(file string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate", file)
	}
	return out, nil
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// ntauth compares the device CAs with AD's NTAuthCertificates: since 2025
// Windows DCs accept certificate logons only from CAs it lists
// (KB5057784). A CA outside it is a warning, or with cert_ntauth a
// failure: the gateway then refuses its devices.
func (k *checker) ntauth(ctx context.Context, conn *ad.Conn) {
	const hint = "publish the CA to NTAuth (certutil -dspublish -f ca.crt NTAuthCA) if it issues logon certificates, or stop trusting it"
	nctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cas, err := conn.NTAuthCertificates(nctx)
	switch {
	case errors.Is(err, ad.ErrNotFound):
		k.line("ntauth", "WARN the forest has no NTAuthCertificates object: Windows DCs accept no certificate logon", nil, hint)
		if k.c.CertNTAuth {
			k.failed = true
		}
		return
	case err != nil:
		k.line("ntauth", "", err, "cert_directory's bind identity must read the configuration partition")
		return
	}
	for _, f := range k.c.ClientCAFiles {
		certs, err := readCerts(f)
		if err != nil {
			continue // deviceCAs reported it
		}
		for _, c := range certs {
			in := slices.ContainsFunc(cas, func(n *x509.Certificate) bool { return bytes.Equal(n.Raw, c.Raw) })
			name := "ntauth " + printableName(c)
			switch {
			case in:
				k.line(name, "in NTAuthCertificates", nil, "")
			case k.c.CertNTAuth:
				k.line(name, "", errors.New("not in NTAuthCertificates: cert_ntauth refuses its devices"), hint)
			default:
				k.line(name, "WARN not in NTAuthCertificates: Windows DCs refuse certificate logons from it since 2025 (KB5057784)", nil, hint)
			}
		}
	}
}

// printableName is a certificate's subject for a check line.
func printableName(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return fmt.Sprintf("%q", c.Subject.CommonName)
	}
	return fmt.Sprintf("%q", c.Subject.String())
}

// rc4Attributes reads an account's msDS-SupportedEncryptionTypes through
// an AD connection of the gateway's (cert_directory, roll.ad): a type that
// leaves it exposed to the 2026 RC4 cut-off is a warning with the fix,
// even while its keys still work.
func (k *checker) rc4Attributes(ctx context.Context, conn *ad.Conn, account string) {
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	a, err := conn.FindAccount(actx, account)
	if err != nil {
		k.line("rc4_cutoff "+account, "", err, "the bind identity must read the account")
		return
	}
	if why := a.RC4Exposure(); len(why) > 0 {
		k.line("rc4_cutoff "+account, "WARN "+strings.Join(why, "; "), nil, "")
		return
	}
	k.line("rc4_cutoff "+account, "msDS-SupportedEncryptionTypes "+a.SupportedEncryptionTypes.String(), nil, "")
}
