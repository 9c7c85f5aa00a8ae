package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/segkcd/segkcd/examples/internal/siteconfig"
	"github.com/segkcd/segkcd/seg"
)

// config is the gateway's JSON configuration file. Secrets are never in it:
// the service account's password comes from a file or an environment
// variable named here, or a keytab file is used.
type config struct {
	Listen string `json:"listen"` // e.g. ":443"
	// ProxyProtocolFrom lists the load balancers (addresses or CIDR
	// prefixes) that pass TLS through to the gateway and announce each
	// client with a PROXY protocol header (HAProxy's send-proxy or
	// send-proxy-v2). When set, every connection must come from one of
	// them with a header, and the client's address is the one failed logins
	// are counted by and logged.
	ProxyProtocolFrom []string `json:"proxy_protocol_from,omitempty"`
	// FailedLoginBurst and FailedLoginRate bound failed logins per client
	// address (seg.ProxyHandler.FailedLoginBurst, FailedLoginRate): default
	// 20, then one every 10s; a negative burst turns the limit off.
	FailedLoginBurst int      `json:"failed_login_burst,omitempty"`
	FailedLoginRate  float64  `json:"failed_login_rate,omitempty"`
	TLSCert          string   `json:"tls_cert"`        // PEM certificate (chain) devices see
	TLSKey           string   `json:"tls_key"`         // its PEM key
	ClientCAFiles    []string `json:"client_ca_files"` // device CAs; empty: no certificate logins
	CRLFiles         []string `json:"crl_files"`       // required with client_ca_files
	// CRLStale is what a CRL past its nextUpdate does: "refuse" (default)
	// the certificate logins it covers, or "warn" and accept them.
	CRLStale string `json:"crl_stale,omitempty"`
	// CertNames are the places of a device certificate that may name its
	// user, in order: "upn" (default, alone), "email", "cn". The last two
	// are weaker: see seg.CertificateAuth.Sources.
	CertNames []string `json:"cert_names,omitempty"`
	// CertMapping is how strongly a device certificate must be bound to
	// its account (KB5014754): "full" (default: the account's SID in the
	// certificate, or a strong altSecurityIdentities entry), "compatibility"
	// (a certificate without a SID is served, counted and logged) or "off".
	// A certificate carrying another account's SID is refused in each.
	CertMapping string `json:"cert_mapping,omitempty"`
	// CertSIDExtensionOnly takes a certificate's SID from its SID extension
	// only, not from a SAN URI: for a device CA whose enrollees write
	// their own SAN (see seg.CertificateAuth.SIDExtensionOnly).
	CertSIDExtensionOnly bool `json:"cert_sid_extension_only,omitempty"`
	// CertDirectory, when set, is the AD connection (LDAPS) the gateway
	// reads accounts' altSecurityIdentities and whenCreated from.
	CertDirectory *siteconfig.AD `json:"cert_directory,omitempty"`
	// CertNTAuth trusts only the device CAs that AD's NTAuthCertificates
	// lists, as Windows DCs do for certificate logons since 2025
	// (KB5057784); read through cert_directory when the gateway starts.
	CertNTAuth bool `json:"cert_ntauth,omitempty"`
	Basic      bool `json:"basic"` // accept Basic logins

	Realm       string   `json:"realm"`        // CORP.EXAMPLE.COM
	NetBIOS     string   `json:"netbios"`      // CORP
	UPNSuffixes []string `json:"upn_suffixes"` // further UPN suffixes of the domain
	KDCs        []string `json:"kdcs"`         // host or host:port; or krb5_conf
	// AllowRC4 takes RC4 tickets and keys (kerberos.Client.AllowRC4) until
	// the accounts on the path have AES keys; -check warns.
	AllowRC4 bool   `json:"allow_rc4,omitempty"`
	Krb5Conf string `json:"krb5_conf"`

	ServiceAccount string `json:"service_account"` // svc_awseg
	KeytabFile     string `json:"keytab_file"`
	PasswordFile   string `json:"password_file"`
	PasswordEnv    string `json:"password_env"`

	ExchangeURL    string `json:"exchange_url"`     // https://mail.corp.example.com
	ExchangeSPN    string `json:"exchange_spn"`     // default HTTP/<host of exchange_url>
	ExchangeCAFile string `json:"exchange_ca_file"` // trust for Exchange's certificate; default: system roots
	// ChannelBindings is "on" (the default): each Negotiate token is bound
	// to its TLS connection to Exchange, which Extended Protection (IIS
	// tokenChecking Require, Exchange 2019 CU14 and later) requires; or
	// "off", only for a TLS-inspecting device between the gateway and
	// Exchange (-check warns).
	ChannelBindings string `json:"channel_bindings,omitempty"`
	// More Exchange servers: users go to the first healthy one, or where a
	// 451 sent them (the answer's X-MS-Location must name one of these).
	Upstreams []upstreamConfig `json:"upstreams,omitempty"`
	PublicURL string           `json:"public_url,omitempty"` // the gateway as devices reach it (451 locations, Autodiscover)
	// Autodiscover and EWS through KCD (off by default).
	Autodiscover bool `json:"autodiscover,omitempty"`
	EWS          bool `json:"ews,omitempty"`

	Policy *policyConfig `json:"policy,omitempty"` // MDM device policy; none: every device of a user may sync
	Admin  *adminConfig  `json:"admin,omitempty"`  // the admin listener; none: no admin API
	Roll   *rollConfig   `json:"roll,omitempty"`   // the ASA roll this gateway runs; none: rolled elsewhere

	TicketTimeout   string `json:"ticket_timeout,omitempty"`          // default 15s
	BodyTimeout     string `json:"body_timeout,omitempty"`            // wait for the next part of a request body, default 60s
	WriteTimeout    string `json:"write_timeout,omitempty"`           // each write of an answer to a device, default 60s
	MaxLongPolls    int    `json:"max_long_polls_per_user,omitempty"` // default 32
	ShutdownTimeout string `json:"shutdown_timeout,omitempty"`        // default 30s
	LogLevel        string `json:"log_level,omitempty"`               // debug, info (default), warn, error

	ticketTimeout, shutdownTimeout, bodyTimeout, writeTimeout time.Duration
	proxyProtocolFrom                                         []netip.Prefix
	certNames                                                 []seg.NameSource
	certMapping                                               seg.CertificateMapping
}

// policyConfig is where the device policy comes from and what a block does.
type policyConfig struct {
	File        string `json:"file,omitempty"`         // a PolicyRules JSON file, reloaded when it changes
	URL         string `json:"url,omitempty"`          // or the MDM's HTTP endpoint, polled
	Interval    string `json:"interval,omitempty"`     // between polls (default 10m) or file looks (5s)
	TokenFile   string `json:"token_file,omitempty"`   // bearer token for url
	CAFile      string `json:"ca_file,omitempty"`      // trust for url's certificate
	BlockStatus int    `json:"block_status,omitempty"` // 403 (default) or 456
	Monitor     bool   `json:"monitor,omitempty"`      // log what would be blocked, block nothing
	FailOpen    bool   `json:"fail_open,omitempty"`    // allow while no policy has loaded (default: 503)

	interval time.Duration
}

// upstreamConfig is one more Exchange server.
type upstreamConfig struct {
	URL string `json:"url"`
	SPN string `json:"spn,omitempty"`
}

// adminConfig is the admin API's listener.
type adminConfig struct {
	Listen    string `json:"listen"`               // default 127.0.0.1:9090
	TokenFile string `json:"token_file,omitempty"` // bearer token; required off loopback

	token string
}

func (a *adminConfig) check() error {
	if a.Listen == "" {
		a.Listen = "127.0.0.1:9090"
	}
	host, _, err := net.SplitHostPort(a.Listen)
	if err != nil {
		return bad("admin.listen", "%v", err)
	}
	if a.TokenFile != "" {
		b, err := os.ReadFile(a.TokenFile)
		if err != nil {
			return bad("admin.token_file", "%v", err)
		}
		if a.token = strings.TrimSpace(string(b)); len(a.token) < 16 {
			return bad("admin.token_file", "the token must have at least 16 characters")
		}
	}
	ip := net.ParseIP(host)
	if a.token == "" && (host == "" || ip == nil || !ip.IsLoopback()) && host != "localhost" {
		return bad("admin.listen", "off loopback the admin API needs admin.token_file")
	}
	return nil
}

func (p *policyConfig) check() error {
	if (p.File == "") == (p.URL == "") {
		return bad("policy.file", "give policy.file or policy.url, not both")
	}
	if p.URL != "" {
		u, err := url.Parse(p.URL)
		if err != nil || u.Host == "" || u.Scheme != "https" {
			return bad("policy.url", "want https://host/path")
		}
	}
	if p.File != "" {
		if _, err := os.Stat(p.File); err != nil {
			return bad("policy.file", "%v", err)
		}
	}
	if p.TokenFile != "" {
		if _, err := os.Stat(p.TokenFile); err != nil {
			return bad("policy.token_file", "%v", err)
		}
	}
	if p.CAFile != "" {
		if _, err := siteconfig.Pool(p.CAFile); err != nil {
			return bad("policy.ca_file", "%v", err)
		}
	}
	switch p.BlockStatus {
	case 0, 403, 456:
	default:
		return bad("policy.block_status", "want 403 or 456")
	}
	var err error
	p.interval, err = parseDuration("policy.interval", p.Interval)
	return err
}

// parseDuration reads an optional duration field such as "15s".
func parseDuration(field, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, bad(field, "%q is not a duration like \"15s\"", s)
	}
	return d, nil
}

// fieldError names the field of the configuration that is wrong.
type fieldError struct {
	field, why string
}

func (e *fieldError) Error() string { return "config: " + e.field + ": " + e.why }

func bad(field, format string, args ...any) error {
	return &fieldError{field, fmt.Sprintf(format, args...)}
}

// loadConfig reads and checks the file; every error names one field.
func loadConfig(path string, plainHTTP bool) (*config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c config
	if err := dec.Decode(&c); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te):
			return nil, bad(te.Field, "want a %s", te.Type)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return nil, bad(strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`), "unknown field")
		}
		return nil, fmt.Errorf("config: %s: %v", path, err)
	}
	return &c, c.check(plainHTTP)
}

func (c *config) check(plainHTTP bool) error {
	if c.Listen == "" {
		return bad("listen", "required (e.g. \":443\")")
	}
	switch c.ChannelBindings {
	case "", "on", "off":
	default:
		return bad("channel_bindings", "%q: on (the default) or off", c.ChannelBindings)
	}
	if !plainHTTP {
		if c.TLSCert == "" || c.TLSKey == "" {
			return bad("tls_cert", "tls_cert and tls_key are required (devices get HTTPS only)")
		}
		if _, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey); err != nil {
			return bad("tls_cert", "%v", err)
		}
	}
	if len(c.ClientCAFiles) == 0 && !c.Basic {
		return bad("client_ca_files", "no way for devices to log in: give device CAs or set basic")
	}
	if len(c.ClientCAFiles) > 0 && plainHTTP {
		return bad("client_ca_files", "certificate logins need TLS (drop -insecure-dev-http)")
	}
	if len(c.ClientCAFiles) > 0 && len(c.CRLFiles) == 0 {
		return bad("crl_files", "required with client_ca_files: a revoked device must be refused")
	}
	for _, f := range c.ClientCAFiles {
		if _, err := siteconfig.Pool(f); err != nil {
			return bad("client_ca_files", "%v", err)
		}
	}
	for _, f := range c.CRLFiles {
		if _, err := os.Stat(f); err != nil {
			return bad("crl_files", "%v", err)
		}
	}
	if c.Realm == "" || c.Realm != strings.ToUpper(c.Realm) {
		return bad("realm", "required, in upper case (e.g. CORP.EXAMPLE.COM)")
	}
	if (len(c.KDCs) == 0) == (c.Krb5Conf == "") {
		return bad("kdcs", "give kdcs or krb5_conf, not both")
	}
	if c.ServiceAccount == "" {
		return bad("service_account", "required (e.g. svc_awseg)")
	}
	n := 0
	for _, s := range []string{c.KeytabFile, c.PasswordFile, c.PasswordEnv} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return bad("keytab_file", "give exactly one of keytab_file, password_file, password_env")
	}
	u, err := url.Parse(c.ExchangeURL)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || (u.Path != "" && u.Path != "/") {
		return bad("exchange_url", "want https://host[:port]")
	}
	if u.Scheme == "http" && !plainHTTP {
		return bad("exchange_url", "http:// sends tickets in clear; use https (or -insecure-dev-http)")
	}
	for i, up := range c.Upstreams {
		u, err := url.Parse(up.URL)
		if err != nil || u.Host == "" || u.Scheme != "https" || (u.Path != "" && u.Path != "/") {
			return bad(fmt.Sprintf("upstreams[%d].url", i), "want https://host[:port]")
		}
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || u.Host == "" || u.Scheme != "https" {
			return bad("public_url", "want https://host[:port]")
		}
	}
	if c.ExchangeCAFile != "" {
		if _, err := siteconfig.Pool(c.ExchangeCAFile); err != nil {
			return bad("exchange_ca_file", "%v", err)
		}
	}
	var err2 error
	if c.ticketTimeout, err2 = parseDuration("ticket_timeout", c.TicketTimeout); err2 != nil {
		return err2
	}
	if c.bodyTimeout, err2 = parseDuration("body_timeout", c.BodyTimeout); err2 != nil {
		return err2
	}
	if c.writeTimeout, err2 = parseDuration("write_timeout", c.WriteTimeout); err2 != nil {
		return err2
	}
	if c.MaxLongPolls < 0 {
		return bad("max_long_polls_per_user", "want a positive number")
	}
	for _, v := range c.ProxyProtocolFrom {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil {
				return bad("proxy_protocol_from", "%q is neither an address nor a CIDR prefix", v)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		c.proxyProtocolFrom = append(c.proxyProtocolFrom, p.Masked())
	}
	if c.FailedLoginRate < 0 {
		return bad("failed_login_rate", "want a positive number of failed logins per second")
	}
	switch c.CRLStale {
	case "", "refuse", "warn":
	default:
		return bad("crl_stale", "want refuse or warn")
	}
	if c.certMapping, err2 = seg.ParseCertificateMapping(c.CertMapping); err2 != nil {
		return bad("cert_mapping", "want full, compatibility or off")
	}
	if c.CertNTAuth && c.CertDirectory == nil {
		return bad("cert_ntauth", "needs cert_directory, the AD connection it reads NTAuthCertificates through")
	}
	if c.CertDirectory != nil {
		var fe *siteconfig.FieldError
		if err := c.CertDirectory.Check(); errors.As(err, &fe) {
			return bad("cert_directory."+fe.Field, "%s", fe.Why)
		} else if err != nil {
			return bad("cert_directory", "%v", err)
		}
	}
	for _, n := range c.CertNames {
		switch n {
		case "upn":
			c.certNames = append(c.certNames, seg.FromUPN)
		case "email":
			c.certNames = append(c.certNames, seg.FromEmail)
		case "cn":
			c.certNames = append(c.certNames, seg.FromCommonName)
		default:
			return bad("cert_names", "%q: want upn, email or cn", n)
		}
	}
	if c.shutdownTimeout, err2 = parseDuration("shutdown_timeout", c.ShutdownTimeout); err2 != nil {
		return err2
	}
	if c.Policy != nil {
		if err := c.Policy.check(); err != nil {
			return err
		}
	}
	if c.Admin != nil {
		if err := c.Admin.check(); err != nil {
			return err
		}
	}
	if c.Roll != nil {
		if err := c.Roll.check(c); err != nil {
			return err
		}
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return bad("log_level", "want debug, info, warn or error")
	}
	return nil
}

// upstreams are Exchange's servers as the configuration names them:
// exchange_url first, then upstreams (the URLs were checked by check).
func (c *config) upstreams() []*seg.Upstream {
	u, _ := url.Parse(c.ExchangeURL)
	ups := []*seg.Upstream{{URL: u, SPN: c.ExchangeSPN}}
	for _, uc := range c.Upstreams {
		u, _ := url.Parse(uc.URL)
		ups = append(ups, &seg.Upstream{URL: u, SPN: uc.SPN})
	}
	return ups
}

func (c *config) password() (string, error) {
	switch {
	case c.PasswordFile != "":
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return "", bad("password_file", "%v", err)
		}
		p := strings.TrimRight(string(b), "\r\n")
		if p == "" {
			return "", bad("password_file", "empty")
		}
		return p, nil
	case c.PasswordEnv != "":
		p := os.Getenv(c.PasswordEnv)
		if p == "" {
			return "", bad("password_env", "%s is empty or not set", c.PasswordEnv)
		}
		return p, nil
	}
	return "", nil
}
