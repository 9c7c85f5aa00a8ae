package ad

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/segkcd/segkcd/internal/redact"
	"github.com/segkcd/segkcd/kerberos"
)

// Config says how to reach and bind to a domain controller.
type Config struct {
	// URL of the DC: "ldaps://dc1.corp.example.com" (port 636) or
	// "ldap://dc1.corp.example.com" (port 389, upgraded with StartTLS).
	URL string
	// URLs are more DCs, tried in order after URL when it cannot be
	// reached or bound (each within DialTimeout).
	URLs []string
	// Locator, when set, finds more DCs in DNS (the domain's SRV records),
	// tried after URL and URLs: over LDAPS on 636 (StartTLS on the SRV
	// port with PlaintextKerberosBind, or when URL is ldap://). A Conn
	// stays on the DC it bound to, so an operation never mixes two DCs'
	// views; Conn.URL says which.
	Locator *Locator
	// Resolver resolves the DCs' host names (and, when the Locator has no
	// Resolver of its own, its SRV records); nil means the host's. Give one
	// whose Dial reaches AD's DNS servers when the host's resolver does not
	// know the domain (a gateway in a DMZ).
	Resolver *net.Resolver
	// GCURL is the global catalog, used for forest-wide SPN duplicate checks.
	// Empty means the same host on 3269 (ldaps) or 3268 (ldap + StartTLS).
	GCURL string
	// TLSConfig verifies the DC's certificate. Nil means the system roots and
	// the URL's host name. For a lab, set RootCAs to the DC's CA (or, only
	// there, InsecureSkipVerify). When the URL holds an IP address, set
	// ServerName to the name in the DC's certificate.
	TLSConfig *tls.Config
	// Bind authenticates the connection: SimpleBind or KerberosBind. Nil
	// leaves it anonymous, which AD allows for the rootDSE only.
	Bind Binder
	// Timeout bounds each request (default 30s); DialTimeout the connect and
	// TLS handshake (default 10s). A context deadline cuts both shorter.
	Timeout     time.Duration
	DialTimeout time.Duration
	// BaseDN is where searches for accounts start; empty means the domain's
	// defaultNamingContext.
	BaseDN string
	// PlaintextKerberosBind keeps an ldap:// connection without TLS
	// instead of using StartTLS, for a DC that offers none. Only a
	// KerberosBind (whose SASL layer signs and seals) or no bind at all may
	// run on such a connection: a SimpleBind is refused before its password
	// is sent, and so is every password write.
	PlaintextKerberosBind bool
}

// Binder authenticates a new connection. SimpleBind and KerberosBind implement it.
type Binder interface {
	bind(ctx context.Context, c *ldap.Conn, host string, isTLS bool) error
}

// SimpleBind is an LDAP simple bind. Its password goes as it is, so it is
// only ever sent over TLS (LDAPS or StartTLS): on any other connection the
// bind is refused before anything is sent. It formats without the password.
type SimpleBind struct {
	Username string // `CORP\admin`, admin@corp.example.com, or a DN
	Password string
}

func (b SimpleBind) bind(_ context.Context, c *ldap.Conn, _ string, isTLS bool) error {
	if b.Password == "" {
		return invalid("bind", b.Username, "empty password (an unauthenticated bind would silently succeed)")
	}
	if !isTLS {
		return &Error{Op: "bind", Object: b.Username, Kind: ErrTLSRequired,
			Err: errors.New("refused to send a simple bind's password over a connection without TLS")}
	}
	return c.Bind(b.Username, b.Password)
}

// Format prints the bind without its password, for every verb.
func (b SimpleBind) Format(f fmt.State, verb rune) {
	type plain SimpleBind
	m := plain(b)
	m.Password = redact.String(m.Password)
	redact.Format(f, verb, "ad.SimpleBind", m)
}

// KerberosBind is a SASL GSSAPI bind with a kerberos.Client (from a
// password, keytab or ccache): the same client that asks for S4U tickets
// and logs on to WinRM. It runs over the TLS connection: go-ldap does not
// sign or seal, so it is never used in clear.
type KerberosBind struct {
	Client *kerberos.Client
	// SPN of the DC; empty means "ldap/<host of the URL>".
	SPN string
}

func (b KerberosBind) bind(ctx context.Context, c *ldap.Conn, host string, _ bool) error {
	if b.Client == nil {
		return invalid("bind", "", "KerberosBind without a client")
	}
	if _, err := b.Client.TGT(ctx); err != nil {
		return fmt.Errorf("kerberos login: %w", err)
	}
	spn := b.SPN
	if spn == "" {
		spn = "ldap/" + host
	}
	err := c.GSSAPIBind(&saslGSSAPI{ctx: ctx, cl: b.Client}, spn, "")
	var le *ldap.Error
	if errors.As(err, &le) && le.ResultCode == ldap.LDAPResultStrongAuthRequired {
		e := wrap("bind", spn, err).(*Error)
		e.Kind = ErrSigningRequired
		return e
	}
	return err
}

// Conn is a bound connection to a DC, meant to be shared: its methods are
// safe for concurrent use. Cancelling the context of a call returns from
// that call at once and leaves the connection to the other callers (the
// DC finishes the request and its answer is dropped; Config.Timeout bounds
// how long that can take). A connection that broke (the DC restarted, a
// firewall dropped it) is dialled and bound again by the next call.
type Conn struct {
	cfg    Config // as dialled: URL is the DC bound to
	orig   Config // as given to Dial
	l      *ldap.Conn
	tls    bool
	host   string
	ip     net.IP // the address the DC was reached at
	info   DomainInfo
	baseDN string

	mu          sync.Mutex
	closed      bool
	gc          *ldap.Conn
	spnMappings map[string]string // alias service class -> "host"
}

// Dial connects, secures (LDAPS or StartTLS), binds, and reads the rootDSE.
//
// With URLs or a Locator, the DCs are tried in order, each within
// DialTimeout; the first that connects, binds and answers is used. When
// none does, the error is a *DialError naming each DC tried and why it
// failed (it matches ErrNoDC). A configuration error (a malformed URL) stops
// at once.
func Dial(ctx context.Context, cfg Config) (*Conn, error) {
	urls, err := cfg.urls(ctx)
	if err != nil {
		return nil, err
	}
	var tried []DCFailure
	for _, u := range urls {
		c, err := dialOne(ctx, cfg, u)
		if err == nil {
			c.orig = cfg
			return c, nil
		}
		if errors.Is(err, ErrInvalidArgument) || ctx.Err() != nil {
			return nil, err
		}
		tried = append(tried, DCFailure{URL: u, Err: err})
	}
	if len(tried) == 1 && cfg.Locator == nil {
		return nil, tried[0].Err // one DC: its error, as before
	}
	return nil, &DialError{Tried: tried}
}

// URL is the DC this connection is bound to, of those Dial tried.
func (c *Conn) URL() string { return c.cfg.URL }

// IP is the address the DC was reached at (its KDC is on port 88 there).
func (c *Conn) IP() net.IP {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ip
}

// dialOne connects to one DC, binds and reads its rootDSE.
func dialOne(ctx context.Context, cfg Config, u string) (*Conn, error) {
	l, isTLS, host, ip, err := connect(ctx, cfg, u)
	if err != nil {
		return nil, wrap("dial", u, err)
	}
	c := &Conn{cfg: cfg, orig: cfg, l: l, tls: isTLS, host: host, ip: ip}
	c.cfg.URL = u
	if err := c.readRootDSE(ctx); err != nil {
		l.Close()
		return nil, err
	}
	return c, nil
}

// connect dials one URL, applies TLS and binds; it returns the
// connection, whether it is encrypted, the URL's host and the address
// reached.
func connect(ctx context.Context, cfg Config, rawURL string) (*ldap.Conn, bool, string, net.IP, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return nil, false, "", nil, invalid("dial", rawURL, "not an ldap:// or ldaps:// URL")
	}
	host, port := u.Hostname(), u.Port()
	var useTLS bool
	switch strings.ToLower(u.Scheme) {
	case "ldaps":
		useTLS = true
		if port == "" {
			port = "636"
		}
	case "ldap":
		if port == "" {
			port = "389"
		}
	default:
		return nil, false, "", nil, invalid("dial", rawURL, "scheme must be ldap or ldaps")
	}
	dialTimeout := cfg.DialTimeout
	if dialTimeout <= 0 {
		dialTimeout = 10 * time.Second
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	raw, err := (&net.Dialer{Resolver: cfg.Resolver}).DialContext(dctx, "tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, false, "", nil, err
	}
	var ip net.IP
	if a, ok := raw.RemoteAddr().(*net.TCPAddr); ok {
		ip = a.IP
	}
	tlsCfg := tlsConfig(cfg.TLSConfig, host)
	var conn net.Conn = raw
	if useTLS {
		tc := tls.Client(raw, tlsCfg)
		if err := tc.HandshakeContext(dctx); err != nil {
			raw.Close()
			return nil, false, "", nil, fmt.Errorf("TLS handshake: %w", err)
		}
		conn = tc
	}
	l := ldap.NewConn(conn, useTLS)
	l.Start()
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	l.SetTimeout(timeout)
	if !useTLS && !cfg.PlaintextKerberosBind {
		err := guard(dctx, l, func() error { return l.StartTLS(tlsCfg) })
		if err != nil {
			l.Close()
			return nil, false, "", nil, fmt.Errorf("StartTLS: %w", err)
		}
		useTLS = true
	}
	if cfg.Bind != nil {
		if err := guard(ctx, l, func() error { return cfg.Bind.bind(ctx, l, tlsCfg.ServerName, useTLS) }); err != nil {
			l.Close()
			return nil, false, "", nil, err
		}
	}
	return l, useTLS, host, ip, nil
}

func tlsConfig(base *tls.Config, host string) *tls.Config {
	var c *tls.Config
	if base != nil {
		c = base.Clone()
	} else {
		c = &tls.Config{}
	}
	if c.ServerName == "" {
		c.ServerName = host
	}
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	return c
}

// guard runs one blocking go-ldap call so that cancelling ctx aborts it.
func guard(ctx context.Context, l *ldap.Conn, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { l.Close() })
	err := fn()
	if !stop() {
		// ctx fired and closed the connection: that, not the
		// "connection closed" error it caused, is the reason.
		return ctx.Err()
	}
	return err
}

// do runs fn on the connection and wraps any error as an *Error.
func (c *Conn) do(ctx context.Context, op, object string, fn func(l *ldap.Conn) error) error {
	l, err := c.conn(ctx)
	if err != nil {
		return wrap(op, object, err)
	}
	return wrap(op, object, await(ctx, func() error { return fn(l) }))
}

// conn returns the connection, dialled and bound again if it broke.
func (c *Conn) conn(ctx context.Context) (*ldap.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, net.ErrClosed
	}
	if !c.l.IsClosing() {
		return c.l, nil
	}
	l, _, _, ip, err := connect(ctx, c.cfg, c.cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("the connection broke and dialling again failed: %w", err)
	}
	// The URL may reach several DCs (a balancer's address, a name with
	// several addresses): a Conn stays on its DC, or a compare-and-swap
	// read on one DC would be swapped on another.
	if c.info.DCHostName != "" {
		var res *ldap.SearchResult
		err := guard(ctx, l, func() (err error) {
			res, err = l.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
				"(objectClass=*)", []string{"dnsHostName"}, nil))
			return err
		})
		if err != nil || len(res.Entries) != 1 || !sameHost(res.Entries[0].GetAttributeValue("dnsHostName"), c.info.DCHostName) {
			l.Close()
			got := "no answer"
			if err == nil && len(res.Entries) == 1 {
				got = res.Entries[0].GetAttributeValue("dnsHostName")
			}
			return nil, fmt.Errorf("the connection broke and %s now reaches another DC (%s), not %s; dial again", c.cfg.URL, got, c.info.DCHostName)
		}
	}
	c.l, c.ip = l, ip
	return l, nil
}

// await runs fn and returns its error, or ctx's as soon as ctx ends: the
// call is left to finish on its own, the connection stays open.
func await(ctx context.Context, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close unbinds and closes the connections; calls after it fail.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.gc != nil {
		c.gc.Close()
		c.gc = nil
	}
	return c.l.Close()
}

// TLS reports whether the connection is encrypted.
func (c *Conn) TLS() bool { return c.tls }

// DomainInfo describes the domain, read from the rootDSE when dialing.
func (c *Conn) DomainInfo() DomainInfo { return c.info }

// requireTLS refuses an operation on an unencrypted connection.
func (c *Conn) requireTLS(op, object string) error {
	if c.tls {
		return nil
	}
	return &Error{Op: op, Object: object, Kind: ErrTLSRequired,
		Err: errors.New("refused to send a password over an unencrypted connection")}
}

// search runs a search with paging (AD returns at most 1000 entries per page otherwise).
func (c *Conn) search(ctx context.Context, op string, req *ldap.SearchRequest) ([]*ldap.Entry, error) {
	return c.searchFor(ctx, op, req.BaseDN, req)
}

// searchFor is search whose errors name object (the account looked up)
// rather than the base DN.
func (c *Conn) searchFor(ctx context.Context, op, object string, req *ldap.SearchRequest) ([]*ldap.Entry, error) {
	var res *ldap.SearchResult
	err := c.do(ctx, op, object, func(l *ldap.Conn) error {
		var err error
		if req.Scope == ldap.ScopeBaseObject {
			res, err = l.Search(req)
		} else {
			res, err = l.SearchWithPaging(req, 500)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return res.Entries, nil
}

// globalCatalog returns a bound connection to the GC, dialing it once.
func (c *Conn) globalCatalog(ctx context.Context) (*ldap.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gc != nil && !c.gc.IsClosing() {
		return c.gc, nil
	}
	gcURL := c.cfg.GCURL
	if gcURL == "" {
		port, scheme := "3269", "ldaps"
		if u, _ := url.Parse(c.cfg.URL); u != nil && strings.EqualFold(u.Scheme, "ldap") {
			port, scheme = "3268", "ldap"
		}
		gcURL = scheme + "://" + net.JoinHostPort(c.host, port)
	}
	gc, _, _, _, err := connect(ctx, c.cfg, gcURL)
	if err != nil {
		return nil, wrap("connect to the global catalog (set Config.GCURL if it is elsewhere)", gcURL, err)
	}
	c.gc = gc
	return gc, nil
}
