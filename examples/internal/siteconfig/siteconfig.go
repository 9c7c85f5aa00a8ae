// Package siteconfig reads, from a program's JSON, how an administrator's
// program reaches a site: AD over LDAPS with a bind identity (a password
// or a keytab), its KDCs, and the Exchange servers' WinRM listeners. It is
// what examples/provision and the roll section of examples/gateway share,
// so that both take the same fields with the same meaning.
//
// Secrets are never in the JSON: it names the environment variable or the
// file that holds each (a systemd credential, say), and nothing here
// formats one.
package siteconfig

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	neturl "net/url"
	"os"
	"slices"
	"strconv"
	"strings"

	krb5config "github.com/jcmturner/gokrb5/v8/config"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/deploy"
	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/winrs"
)

// Secret names where a secret is: an environment variable or a file (its
// trailing line end is dropped).
type Secret struct {
	Env  string `json:"env,omitempty"`
	File string `json:"file,omitempty"`
}

// Set reports whether the secret names a place.
func (s Secret) Set() bool { return s.Env != "" || s.File != "" }

// Value reads the secret; field names it in errors.
func (s Secret) Value(field string) (string, error) {
	switch {
	case s.Env != "":
		v := os.Getenv(s.Env)
		if v == "" {
			return "", fmt.Errorf("%s: $%s is empty", field, s.Env)
		}
		return v, nil
	case s.File != "":
		b, err := os.ReadFile(s.File)
		if err != nil {
			return "", fmt.Errorf("%s: %w", field, err)
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return "", fmt.Errorf("%s: %s is empty", field, s.File)
		}
		return v, nil
	}
	return "", fmt.Errorf("%s: name an env or a file", field)
}

// AD is how to reach and bind to a domain controller, and its KDCs.
type AD struct {
	LDAPURL string `json:"ldap_url,omitempty"` // ldaps://dc1.corp.example.com, or ldap:// (StartTLS)
	// LDAPURLs are more DCs, tried in order when ldap_url cannot be
	// reached or bound (ad.Config.URLs).
	LDAPURLs []string `json:"ldap_urls,omitempty"`
	// Domain finds the DCs in DNS as Windows clients do (ad.Locator: the
	// SRV records _ldap._tcp[.<site>._sites].dc._msdcs.<domain>), tried
	// after ldap_url and ldap_urls, which may then be left out; Site puts
	// that AD site's DCs first. Without kdcs or krb5_conf, the KDCs come
	// from the same DNS (_kerberos._tcp...).
	Domain string `json:"domain,omitempty"`
	Site   string `json:"site,omitempty"`
	// DNSServers are the domain's DNS servers (host[:port], AD's DNS) for
	// the SRV records and the DCs' and KDCs' names, when the host's
	// resolver does not know the domain (a gateway in a DMZ); default: the
	// host's resolver.
	DNSServers []string `json:"dns_servers,omitempty"`
	GCURL      string   `json:"gc_url,omitempty"`      // default: the same host, 3269
	CAFile     string   `json:"ca_file,omitempty"`     // the DC's CA (PEM); default: system roots
	ServerName string   `json:"server_name,omitempty"` // the name in the DC's certificate, when ldap_url holds an address
	// BindUser is the account: CORP\admin, or its sAMAccountName. With
	// BindPassword it binds with LDAP's simple bind (over TLS only); with
	// BindKeytab by Kerberos (SASL GSSAPI over TLS), as BindUser's
	// sAMAccountName in the realm.
	BindUser     string `json:"bind_user"`
	BindPassword Secret `json:"bind_password,omitzero"`
	BindKeytab   string `json:"bind_keytab,omitempty"`

	KDCs     []string `json:"kdcs,omitempty"`      // host[:port]; default: the DC's host
	Krb5Conf string   `json:"krb5_conf,omitempty"` // instead of kdcs
	// Realm is the Kerberos realm; default: the domain's DNS name in upper
	// case (read from the DC's rootDSE, which AD shows anonymously).
	Realm string `json:"realm,omitempty"`
}

// FieldError is a field that is missing or contradicts another.
type FieldError struct {
	Field string // its JSON name
	Why   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Why }

// Check returns a *FieldError for the first field that is missing or
// contradicts another.
func (a AD) Check() error {
	switch {
	case a.LDAPURL == "" && len(a.LDAPURLs) == 0 && a.Domain == "":
		return &FieldError{"ldap_url", "required (or ldap_urls, or domain to find the DCs in DNS)"}
	case a.Site != "" && a.Domain == "":
		return &FieldError{"site", "needs domain"}
	case a.BindUser == "":
		return &FieldError{"bind_user", "required"}
	case a.BindPassword.Set() == (a.BindKeytab != ""):
		return &FieldError{"bind_password", "give bind_password or bind_keytab, not both"}
	case len(a.KDCs) > 0 && a.Krb5Conf != "":
		return &FieldError{"kdcs", "give kdcs or krb5_conf, not both"}
	}
	return nil
}

// Conn is a bound AD connection and a Kerberos client of the same
// account (for WinRM's Kerberos and the ASA roll's ticket check).
type Conn struct {
	AD       *ad.Conn
	Kerberos *kerberos.Client
	// Password is the bind password, for a WinRM logon with the same
	// account; empty with a keytab.
	Password string
}

// Dial connects and binds.
func (a AD) Dial(ctx context.Context) (*Conn, error) {
	if err := a.Check(); err != nil {
		return nil, err
	}
	tc := &tls.Config{ServerName: a.ServerName, MinVersion: tls.VersionTLS12}
	if a.CAFile != "" {
		p, err := Pool(a.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		tc.RootCAs = p
	}
	cfg := ad.Config{URL: a.LDAPURL, URLs: a.LDAPURLs, GCURL: a.GCURL, TLSConfig: tc, Resolver: a.resolver()}
	if a.Domain != "" {
		cfg.Locator = &ad.Locator{Domain: a.Domain, Site: a.Site}
	}
	if a.BindKeytab != "" {
		kt, err := kerberos.LoadKeytab(a.BindKeytab)
		if err != nil {
			return nil, fmt.Errorf("bind_keytab: %w", err)
		}
		realm := a.Realm
		if realm == "" {
			// The rootDSE names the domain without a bind.
			anon, err := ad.Dial(ctx, cfg)
			if err != nil {
				return nil, err
			}
			realm = strings.ToUpper(anon.DomainInfo().DNSDomain)
			anon.Close()
		}
		kcfg, err := a.kerberosConfig(ctx, realm)
		if err != nil {
			return nil, err
		}
		cl := kerberos.NewWithKeytab(accountName(a.BindUser), realm, kt, kcfg)
		cfg.Bind = ad.KerberosBind{Client: cl}
		conn, err := ad.Dial(ctx, cfg)
		if err != nil {
			return nil, err
		}
		return &Conn{AD: conn, Kerberos: cl}, nil
	}
	pw, err := a.BindPassword.Value("bind_password")
	if err != nil {
		return nil, err
	}
	cfg.Bind = ad.SimpleBind{Username: a.BindUser, Password: pw}
	conn, err := ad.Dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	// The KDC knows the account by its sAMAccountName, which a simple
	// bind's name (CORP\admin, a UPN, a DN) need not be.
	acct, err := conn.FindAccount(ctx, a.BindUser)
	if err != nil {
		conn.Close()
		return nil, err
	}
	realm := a.Realm
	if realm == "" {
		realm = strings.ToUpper(conn.DomainInfo().DNSDomain)
	}
	kcfg, err := a.kerberosConfig(ctx, realm)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &Conn{AD: conn, Kerberos: kerberos.NewWithPassword(acct.SAMAccountName, realm, pw, kcfg), Password: pw}, nil
}

// accountName is CORP\name's or name@realm's name.
func accountName(user string) string {
	if _, name, ok := strings.Cut(user, `\`); ok {
		return name
	}
	name, _, _ := strings.Cut(user, "@")
	return name
}

// resolver asks dns_servers; nil (the host's) without them.
func (a AD) resolver() *net.Resolver {
	if len(a.DNSServers) == 0 {
		return nil
	}
	return ad.DNSResolver(a.DNSServers...)
}

// kerberosConfig is krb5_conf, or a configuration of kdcs, or by default
// every DC's KDC: the hosts of ldap_url and ldap_urls in their order, then
// the KDCs domain's SRV records name. With dns_servers, KDC names are
// resolved to addresses here (the Kerberos library asks the host's
// resolver).
func (a AD) kerberosConfig(ctx context.Context, realm string) (*krb5config.Config, error) {
	if a.Krb5Conf != "" {
		c, err := kerberos.LoadConfig(a.Krb5Conf)
		if err != nil {
			return nil, fmt.Errorf("krb5_conf: %w", err)
		}
		return c, nil
	}
	kdcs := append([]string(nil), a.KDCs...)
	if len(kdcs) == 0 {
		// Every DC's KDC, in the order the DCs are tried.
		for _, raw := range append([]string{a.LDAPURL}, a.LDAPURLs...) {
			if raw == "" {
				continue
			}
			u, err := neturl.Parse(raw)
			if err != nil || u.Hostname() == "" {
				return nil, fmt.Errorf("ldap_url: not a URL: %q", raw)
			}
			kdcs = append(kdcs, u.Hostname())
		}
		if a.Domain != "" {
			found, err := (&ad.Locator{Domain: a.Domain, Site: a.Site, Resolver: a.resolver()}).KDCs(ctx)
			if err != nil && len(kdcs) == 0 {
				return nil, fmt.Errorf("domain: %w", err)
			}
			kdcs = append(kdcs, found...)
		}
	}
	for i, k := range kdcs {
		if _, _, err := net.SplitHostPort(k); err != nil {
			kdcs[i] = net.JoinHostPort(k, "88")
		}
	}
	if res := a.resolver(); res != nil {
		// A name that does not resolve (a demoted DC's stale SRV record)
		// is left out, as long as one KDC remains.
		var addrs []string
		var errs []error
		for _, k := range kdcs {
			host, port, _ := net.SplitHostPort(k)
			if net.ParseIP(host) != nil {
				addrs = append(addrs, k)
				continue
			}
			ips, err := res.LookupHost(ctx, host)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", host, err))
				continue
			}
			for _, ip := range ips {
				addrs = append(addrs, net.JoinHostPort(ip, port))
			}
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("kdcs: no KDC name resolves: %w", errors.Join(errs...))
		}
		kdcs = addrs
	}
	var uniq []string
	for _, k := range kdcs {
		if !slices.Contains(uniq, k) {
			uniq = append(uniq, k)
		}
	}
	c, err := kerberos.NewConfig(realm, uniq...)
	if err != nil {
		return nil, fmt.Errorf("kdcs: %w", err)
	}
	return c, nil
}

// Server is an Exchange server and where its WinRM listens.
type Server struct {
	Name    string `json:"name"`              // CAS1
	Version string `json:"version,omitempty"` // optional: 2013, 2016, 2019/SE
	WinRM   string `json:"winrm,omitempty"`   // host[:port] of its listener; default: winrm.address
	// SPN of its listener for Kerberos logons; default HTTP/<host of
	// winrm> (when winrm is empty, winrm.spn applies).
	SPN string `json:"spn,omitempty"`
}

// WinRM is how to log on to the servers' WinRM listeners.
type WinRM struct {
	Address  string `json:"address"`             // host[:port] of the management server's listener
	Auth     string `json:"auth,omitempty"`      // ntlm (default), kerberos or basic
	User     string `json:"user,omitempty"`      // default: bind_user
	Password Secret `json:"password,omitzero"`   // default: bind_password
	TLS      bool   `json:"tls,omitempty"`       // HTTPS (5986); without it NTLM and Kerberos seal every message
	CAFile   string `json:"ca_file,omitempty"`   // the listener's CA
	TestHost bool   `json:"test_host,omitempty"` // segkcd's WS-Man test host, a model of Windows: said in every report
	// SPN of the listener at Address for Kerberos logons; default
	// HTTP/<host of Address> (set it when Address is an IP address or a
	// name that is not the host's).
	SPN string `json:"spn,omitempty"`
}

// Shells makes a WinRM client per listener and the servers of a
// deployment with them; exch is the management shell (the listener named
// in winrm.address), which runs the Exchange cmdlets.
func (w WinRM) Shells(servers []Server, conn *Conn, bindUser string) (out []deploy.Server, exch winrs.Shell, err error) {
	if len(servers) == 0 {
		return nil, nil, errors.New("servers: at least one Exchange server")
	}
	shells := map[string]winrs.Shell{}
	for _, s := range servers {
		if s.Name == "" {
			return nil, nil, errors.New("servers: a server without a name")
		}
		addr, spn := s.WinRM, s.SPN
		if addr == "" {
			addr, spn = w.Address, w.SPN
		}
		if addr == "" {
			return nil, nil, fmt.Errorf("server %s: no WinRM address (servers[].winrm or winrm.address)", s.Name)
		}
		sh, ok := shells[addr]
		if !ok {
			if sh, err = w.shell(addr, spn, conn, bindUser); err != nil {
				return nil, nil, fmt.Errorf("server %s: %w", s.Name, err)
			}
			shells[addr] = sh
		}
		out = append(out, deploy.Server{Name: s.Name, Version: s.Version, Shell: sh})
	}
	if sh, ok := shells[w.Address]; ok {
		exch = sh
	} else if w.Address != "" {
		if exch, err = w.shell(w.Address, w.SPN, conn, bindUser); err != nil {
			return nil, nil, err
		}
	}
	return out, exch, nil
}

// shell is a WinRM client for one listener.
func (w WinRM) shell(addr, spn string, conn *Conn, bindUser string) (*winrs.Client, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = addr, ""
	}
	p, _ := strconv.Atoi(port)
	user := w.User
	if user == "" {
		user = bindUser
	}
	cfg := winrs.Config{Host: host, Port: p}
	if w.TLS {
		cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		if w.CAFile != "" {
			if cfg.TLS.RootCAs, err = Pool(w.CAFile); err != nil {
				return nil, fmt.Errorf("winrm.ca_file: %w", err)
			}
		}
	}
	password := func() (string, error) {
		if w.Password.Set() {
			return w.Password.Value("winrm.password")
		}
		if conn.Password == "" {
			return "", errors.New("winrm.password: required (the bind identity is a keytab; or use winrm.auth kerberos)")
		}
		return conn.Password, nil
	}
	switch w.Auth {
	case "", "ntlm":
		pw, err := password()
		if err != nil {
			return nil, err
		}
		cfg.Auth = winrs.NTLM{User: user, Password: pw}
	case "basic":
		pw, err := password()
		if err != nil {
			return nil, err
		}
		cfg.Auth = winrs.Basic{User: user, Password: pw}
	case "kerberos":
		cfg.Auth = winrs.Kerberos{Client: conn.Kerberos, SPN: spn}
	default:
		return nil, fmt.Errorf("winrm.auth %q: ntlm, kerberos or basic", w.Auth)
	}
	return winrs.New(cfg)
}

// Pool reads PEM certificates into a pool.
func Pool(files ...string) (*x509.CertPool, error) {
	p := x509.NewCertPool()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if !p.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s: no PEM certificate", f)
		}
	}
	return p, nil
}
