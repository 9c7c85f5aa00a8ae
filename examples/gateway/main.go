// Command gateway runs the segkcd ActiveSync gateway (package seg) from a
// JSON configuration file:
//
//	gateway -config /etc/seg/gateway.json
//
// Devices log in with a client certificate (client_ca_files, crl_files)
// and/or Basic (basic: true); the gateway gets a ticket as the user from the
// KDC with the service account's delegation rights and forwards the request
// to Exchange. SIGHUP reloads the TLS certificate, the device CAs and the
// CRLs; SIGTERM or SIGINT stops accepting connections and lets requests in
// flight finish (up to shutdown_timeout). A bad configuration stops it with
// one line naming the field. It serves HTTPS only, unless the
// -insecure-dev-http flag (development only: passwords would cross the
// network in clear) says otherwise.
//
//	gateway -check -config /etc/seg/gateway.json [-check-user alice]
//
// checks the configuration without serving: the files, the certificates
// and their expiry, the CRLs' freshness, krb5.conf, a TGT for the service
// account, a ticket to each Exchange SPN (and with -check-user one as that
// user, by delegation), a TLS handshake with each Exchange server, and the
// policy. It prints one line per check (ok, WARN or FAIL, with a hint) and
// exits 0 when none failed, else 1.
//
// With a roll section the gateway also rolls the ASA's password
// (deploy.Roller): every replica checks, exactly one rolls, a roll whose
// replica died is finished by another after the lease; GET /v1/roll on
// the admin API and the segkcd_asa_roll_* metrics say how it stands.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	krb5config "github.com/jcmturner/gokrb5/v8/config"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/segkcd/segkcd/examples/internal/siteconfig"
	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/seg"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	os.Exit(run(ctx, os.Args[1:], hup, os.Stdout, os.Stderr))
}

// run is the program; it returns the exit code.
func run(ctx context.Context, args []string, hup <-chan os.Signal, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "path of the JSON configuration file")
	plain := fs.Bool("insecure-dev-http", false, "DEVELOPMENT ONLY: serve plain HTTP to devices (Basic passwords in clear)")
	check := fs.Bool("check", false, "check the configuration (files, certificates, CRLs, the KDC, tickets, Exchange's TLS, the policy), print one line per check, exit 0 when all pass; serves nothing")
	checkUser := fs.String("check-user", "", "with -check: also get a ticket as this user (S4U2Self and S4U2Proxy), which shows the delegation")
	checkCert := fs.String("check-cert", "", "with -check: a device certificate (PEM) to map to its account as a login would: does it carry a SID, and is it strong enough for cert_mapping")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "gateway: -config is required")
		return 2
	}
	c, err := loadConfig(*path, *plain)
	if *check {
		if err != nil {
			fmt.Fprintf(stdout, "FAIL config: %v\n", err)
			return 1
		}
		k := &checker{c: c, plain: *plain, user: *checkUser, cert: *checkCert, out: stdout}
		if !k.check(ctx) {
			return 1
		}
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "gateway:", err)
		return 2
	}
	logs := newLogWriter(stderr)
	g, err := newGateway(c, *plain, logs)
	if err != nil {
		logs.Close()
		fmt.Fprintln(stderr, "gateway:", err)
		return 2
	}
	err = g.serve(ctx, hup)
	logs.Close()
	if err != nil {
		fmt.Fprintln(stderr, "gateway:", err)
		return 1
	}
	return 0
}

type gateway struct {
	c         *config
	policy    *seg.Policy
	run       []func(context.Context) // background work: policy sources
	admin     *http.Server
	redirects *seg.Redirects
	svc       *kerberos.Client
	cache     *kerberos.Cache
	plain     bool
	log       *slog.Logger
	srv       *http.Server
	certs     atomic.Pointer[tlsState]
	crl       *seg.CRL
	handler   *seg.ProxyHandler
	// kdcAnswered is when a KDC last answered (UnixNano), for /readyz.
	kdcAnswered atomic.Int64
}

// tlsState is what SIGHUP replaces.
type tlsState struct {
	cert *tls.Certificate
	cas  *x509.CertPool
}

func newGateway(c *config, plain bool, stderr io.Writer) (*gateway, error) {
	level := map[string]slog.Level{"": slog.LevelInfo, "debug": slog.LevelDebug, "info": slog.LevelInfo,
		"warn": slog.LevelWarn, "error": slog.LevelError}[c.LogLevel]
	g := &gateway{c: c, plain: plain, log: slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))}

	var kcfg *krb5config.Config
	var err error
	if c.Krb5Conf != "" {
		if kcfg, err = kerberos.LoadConfig(c.Krb5Conf); err != nil {
			return nil, bad("krb5_conf", "%v", err)
		}
	} else if kcfg, err = kerberos.NewConfig(c.Realm, c.KDCs...); err != nil {
		return nil, bad("kdcs", "%v", err)
	}
	kdcs := &kerberos.Transport{Config: kcfg}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := seg.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	metrics.KDC(kdcs)
	observe := kdcs.Observe
	kdcs.Observe = func(kdc, proto string, took time.Duration, err error) {
		if err == nil { // a KRB-ERROR is an answer too: the KDC is there
			g.kdcAnswered.Store(time.Now().UnixNano())
		}
		if observe != nil {
			observe(kdc, proto, took, err)
		}
	}
	var svc *kerberos.Client
	if c.KeytabFile != "" {
		kt, err := kerberos.LoadKeytab(c.KeytabFile)
		if err != nil {
			return nil, bad("keytab_file", "%v", err)
		}
		svc = kerberos.NewWithKeytab(c.ServiceAccount, c.Realm, kt, kcfg)
		svc.Transport = kdcs
	} else {
		pw, err := c.password()
		if err != nil {
			return nil, err
		}
		svc = kerberos.NewWithPassword(c.ServiceAccount, c.Realm, pw, kcfg)
		svc.Transport = kdcs
	}
	svc.AllowRC4 = c.AllowRC4

	// Every name a device presents is resolved by the KDC to the account
	// that holds it (a UPN's prefix is not an account name).
	names := seg.Names{Realm: c.Realm, NetBIOS: c.NetBIOS, Suffixes: c.UPNSuffixes, Accounts: &seg.Accounts{Resolver: svc}}
	var auths []func(*http.Request) (*seg.Identity, error)
	if len(c.ClientCAFiles) > 0 {
		g.crl = &seg.CRL{Files: c.CRLFiles, AllowStale: c.CRLStale == "warn", Logger: g.log, Metrics: metrics}
		if err := g.crl.Reload(); err != nil {
			return nil, bad("crl_files", "%v", err)
		}
		certs := &seg.CertificateAuth{Sources: c.certNames, Revocation: g.crl, Mapping: c.certMapping,
			SIDExtensionOnly: c.CertSIDExtensionOnly,
			Metrics:          metrics, Logger: g.log}
		if c.CertDirectory != nil {
			certs.Directory = &lazyDirectory{ad: *c.CertDirectory}
		}
		if c.CertNTAuth {
			cas, err := readNTAuth(c.CertDirectory)
			if err != nil {
				return nil, bad("cert_ntauth", "%v", err)
			}
			certs.TrustedIssuers = cas
		}
		auths = append(auths, certs.Authenticate)
	}
	if c.Basic {
		auths = append(auths, (&seg.BasicAuth{Realm: c.Realm, Config: kcfg, Transport: kdcs, Service: svc}).Authenticate)
	}
	upstreamTLS := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.ExchangeCAFile != "" {
		if upstreamTLS.RootCAs, err = siteconfig.Pool(c.ExchangeCAFile); err != nil {
			return nil, bad("exchange_ca_file", "%v", err)
		}
	}
	g.svc, g.cache = svc, &kerberos.Cache{Source: svc}
	if err := metrics.Cache(g.cache); err != nil {
		return nil, err
	}
	ups := c.upstreams()
	var public *url.URL
	if c.PublicURL != "" {
		public, _ = url.Parse(c.PublicURL)
	}
	g.redirects = &seg.Redirects{}
	g.run = append(g.run, (&seg.HealthCheck{Upstreams: ups, Metrics: metrics, Logger: g.log,
		Client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: upstreamTLS}}}).Run)
	g.handler = &seg.ProxyHandler{
		Upstreams:     ups,
		Redirects:     g.redirects,
		PublicURL:     public,
		Autodiscover:  c.Autodiscover,
		EWS:           c.EWS,
		Tickets:       g.cache,
		Metrics:       metrics,
		Debug:         &seg.DebugDevices{},
		Authenticate:  seg.AnyOf(auths...),
		Names:         names, // the authenticators' too
		Transport:     &seg.UserPools{TLSClientConfig: upstreamTLS},
		UnboundTokens: c.ChannelBindings == "off",
		TicketTimeout: c.ticketTimeout,
		BodyTimeout:   c.bodyTimeout,
		WriteTimeout:  c.writeTimeout,
		Logger:        g.log,

		MaxLongPollsPerUser: c.MaxLongPolls,
		FailedLoginBurst:    c.FailedLoginBurst,
		FailedLoginRate:     c.FailedLoginRate,
	}
	if c.Policy != nil {
		if err := g.setPolicy(names); err != nil {
			return nil, err
		}
		g.policy.Metrics = metrics
	}
	var roll func() any
	if c.Roll != nil {
		ro := &roller{c: c.Roll, service: c.ServiceAccount, reg: reg, log: g.log}
		g.run = append(g.run, ro.Run)
		roll = ro.Status
	}
	if c.Admin != nil {
		admin := &seg.Admin{Token: c.Admin.token, Names: names, Policy: g.policy, Tickets: g.cache, SPN: ups[0].TicketSPN(), Debug: g.handler.Debug, Redirects: g.redirects,
			Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), Ready: g.ready, Roll: roll}
		// Admin requests are small: a whole one within 30 s, or the
		// connection is closed (a client that stalls a body holds nothing).
		g.admin = &http.Server{Addr: c.Admin.Listen, Handler: admin, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second}
	}
	if err := g.loadTLS(); err != nil {
		return nil, err
	}
	var tlsConf *tls.Config
	if !plain {
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12, GetConfigForClient: g.configForClient,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return g.certs.Load().cert, nil }}
	}
	g.srv = seg.NewServer(g.handler, tlsConf)
	g.srv.ErrorLog = slog.NewLogLogger(g.log.Handler(), slog.LevelDebug) // TLS handshake failures of devices
	return g, nil
}

// kdcFresh is how long a KDC's answer (to any exchange) stands for the
// KDC's readiness; past it /readyz asks the KDC itself. A replica whose KDC
// is cut leaves a load balancer's rotation within this, plus the balancer's
// own checks.
const kdcFresh = 15 * time.Second

// ready is /readyz. The gateway is not ready, and says every reason, when:
// the KDC has not answered within kdcFresh and does not answer now (the
// service's TGT, then a TGS for the first upstream's SPN); no upstream
// passed its last health probe; no device policy has loaded and fail_open
// is off (every device would get 503); a CRL is past its nextUpdate and
// crl_stale is refuse (certificate logins it covers are refused).
func (g *gateway) ready(ctx context.Context) error {
	var why []string
	if err := g.kdcReady(ctx); err != nil {
		why = append(why, err.Error())
	}
	healthy := false
	var down []string
	for _, u := range g.handler.Upstreams {
		ok, reason := u.Healthy()
		healthy = healthy || ok
		if !ok {
			down = append(down, u.URL.Host+": "+reason)
		}
	}
	if !healthy {
		why = append(why, fmt.Sprintf("no healthy Exchange upstream (%s)", strings.Join(down, "; ")))
	}
	if g.policy != nil && !g.c.Policy.FailOpen && g.policy.Decide(seg.PolicyInput{}).Rule == "no policy" {
		why = append(why, "no device policy loaded yet (fail_open is off: devices get 503)")
	}
	if g.crl != nil && !g.crl.AllowStale {
		if stale := g.crl.Stale(); len(stale) > 0 {
			why = append(why, "CRL past its nextUpdate, certificate logins refused (crl_stale: refuse): "+strings.Join(stale, ", "))
		}
	}
	if len(why) > 0 {
		return errors.New(strings.Join(why, "; "))
	}
	return nil
}

// kdcReady: a KDC answered within kdcFresh, or answers now.
func (g *gateway) kdcReady(ctx context.Context) error {
	if time.Since(time.Unix(0, g.kdcAnswered.Load())) < kdcFresh {
		return nil
	}
	if _, err := g.svc.TGT(ctx); err != nil {
		return fmt.Errorf("service TGT: %w", err)
	}
	if _, err := g.svc.ServiceTicket(ctx, g.handler.Upstreams[0].TicketSPN()); err != nil {
		return fmt.Errorf("KDC: %w", err)
	}
	g.kdcAnswered.Store(time.Now().UnixNano())
	return nil
}

// setPolicy makes the device policy the handler's Authorize hook, with its
// source to run in the background. A policy file must load at start; an
// MDM that does not answer yet leaves the policy to fail_open.
func (g *gateway) setPolicy(names seg.Names) error {
	pc := g.c.Policy
	g.policy = &seg.Policy{BlockStatus: pc.BlockStatus, Monitor: pc.Monitor, FailOpen: pc.FailOpen, Names: names, Logger: g.log}
	g.handler.Authorize = g.policy.Authorize
	if pc.File != "" {
		f := &seg.PolicyFile{Path: pc.File, Policy: g.policy, Interval: pc.interval, Logger: g.log}
		if err := f.Load(); err != nil {
			return bad("policy.file", "%v", err)
		}
		g.run = append(g.run, f.Run)
		return nil
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12}}
	if pc.CAFile != "" {
		pool, err := siteconfig.Pool(pc.CAFile)
		if err != nil {
			return bad("policy.ca_file", "%v", err)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	var rt http.RoundTripper = tr
	if pc.TokenFile != "" {
		b, err := os.ReadFile(pc.TokenFile)
		if err != nil {
			return bad("policy.token_file", "%v", err)
		}
		rt = &bearer{token: strings.TrimSpace(string(b)), next: tr}
	}
	h := &seg.PolicyHTTP{URL: pc.URL, Policy: g.policy, Client: &http.Client{Transport: rt, Timeout: 30 * time.Second},
		Interval: pc.interval, Logger: g.log}
	g.run = append(g.run, h.Run)
	return nil
}

// bearer adds the MDM's token to each policy request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// loadTLS reads the certificate and the device CAs; SIGHUP calls it again.
func (g *gateway) loadTLS() error {
	st := &tlsState{}
	if !g.plain {
		cert, err := tls.LoadX509KeyPair(g.c.TLSCert, g.c.TLSKey)
		if err != nil {
			return bad("tls_cert", "%v", err)
		}
		st.cert = &cert
	}
	if len(g.c.ClientCAFiles) > 0 {
		pool, err := siteconfig.Pool(g.c.ClientCAFiles...)
		if err != nil {
			return bad("client_ca_files", "%v", err)
		}
		st.cas = pool
	}
	g.certs.Store(st)
	return nil
}

// configForClient gives each handshake the certificate and CAs of now.
func (g *gateway) configForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	st := g.certs.Load()
	conf := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*st.cert},
		NextProtos: []string{"http/1.1"}}
	if st.cas != nil {
		conf.ClientCAs = st.cas
		conf.ClientAuth = tls.VerifyClientCertIfGiven
		if !g.c.Basic {
			conf.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return conf, nil
}

func (g *gateway) serve(ctx context.Context, hup <-chan os.Signal) error {
	ln, err := net.Listen("tcp", g.c.Listen)
	if err != nil {
		return bad("listen", "%v", err)
	}
	if len(g.c.proxyProtocolFrom) > 0 {
		ln = &seg.ProxyProtocolListener{Listener: ln, Trusted: g.c.proxyProtocolFrom}
	}
	errc := make(chan error, 1)
	go func() {
		if g.plain {
			errc <- g.srv.Serve(ln)
		} else {
			errc <- g.srv.ServeTLS(ln, "", "")
		}
	}()
	scheme := "https"
	if g.plain {
		scheme = "http"
		g.log.Warn("serving plain HTTP to devices: development only")
	}
	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	for _, run := range g.run {
		go run(bg)
	}
	if g.admin != nil {
		aln, err := net.Listen("tcp", g.admin.Addr)
		if err != nil {
			ln.Close()
			return bad("admin.listen", "%v", err)
		}
		go g.admin.Serve(aln)
		defer g.admin.Close()
		g.log.Info("admin API listening", "addr", aln.Addr().String())
	}
	g.log.Info("listening", "addr", ln.Addr().String(), "scheme", scheme, "exchange", g.c.ExchangeURL)
	for {
		select {
		case <-hup:
			err := g.loadTLS()
			if err == nil && g.crl != nil {
				err = g.crl.Reload()
			}
			if err != nil {
				g.log.Error("reload failed; keeping what was loaded", "error", err.Error())
			} else {
				g.log.Info("reloaded the certificate, the device CAs and the CRLs")
			}
		case err := <-errc:
			return err
		case <-ctx.Done():
			g.log.Info("shutting down: finishing requests in flight")
			timeout := g.c.shutdownTimeout
			if timeout <= 0 {
				timeout = 30 * time.Second
			}
			sctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			err := g.srv.Shutdown(sctx)
			if err == nil {
				// The long polls the handler parked are not the server's:
				// those whose answer has begun are waited for too.
				err = g.handler.Shutdown(sctx)
			}
			if errors.Is(err, context.DeadlineExceeded) {
				g.log.Warn("requests still in flight at the shutdown timeout were cut", "timeout", timeout.String())
				g.srv.Close()
				return nil
			}
			return err
		}
	}
}

// lazyDirectory is cert_directory's connection, dialled at its first use
// and again after a failure, so that the gateway starts while a DC is away
// (a certificate login that needs the directory fails meanwhile).
type lazyDirectory struct {
	ad   siteconfig.AD
	mu   sync.Mutex
	conn *siteconfig.Conn
}

// CertificateMappings implements seg.CertificateDirectory.
func (d *lazyDirectory) CertificateMappings(ctx context.Context, sid string) ([]string, time.Time, error) {
	d.mu.Lock()
	conn := d.conn
	if conn == nil {
		var err error
		if conn, err = d.ad.Dial(ctx); err != nil {
			d.mu.Unlock()
			return nil, time.Time{}, fmt.Errorf("cert_directory: %w", err)
		}
		d.conn = conn
	}
	d.mu.Unlock()
	return conn.AD.CertificateMappings(ctx, sid)
}

// readNTAuth reads AD's NTAuthCertificates through a (cert_ntauth): the
// gateway does not start without them, since it would otherwise trust
// every CA its files name.
func readNTAuth(a *siteconfig.AD) ([]*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := a.Dial(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.AD.Close()
	cas, err := conn.AD.NTAuthCertificates(ctx)
	if err == nil && len(cas) == 0 {
		err = errors.New("NTAuthCertificates lists no CA")
	}
	return cas, err
}
