package seg_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/internal/testinfra/eastest"
	"github.com/segkcd/segkcd/internal/testinfra/kdcspy"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
	"github.com/segkcd/segkcd/internal/testinfra/testpki"
	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/seg"
)

var theLab lab.Shared

func TestMain(m *testing.M) { os.Exit(theLab.Run(m)) }

const (
	svcName     = "svc_seg" // names of this package's own: other test binaries share the lab's DC
	svcPassword = "Seg-Svc-Passw0rd!"
	asaName     = "SEGASA"
	asaPassword = "Seg-Asa-Rolled-Passw0rd-1234567890!"
	isoUsers    = 60            // users of the identity isolation test
	altSuffix   = "example.com" // an alternative UPN suffix the gateway lists
)

// rig is a gateway in front of the Exchange stand-in, with a lab behind both.
type rig struct {
	lab      *lab.Lab
	spn      string
	spn2     string // a second Exchange server's, also on the ASA
	asa      *kerberos.Acceptor
	exchange *eastest.Server
	ca       *testpki.CA
	crlPath  string
	gateway  *httptest.Server
	handler  *seg.ProxyHandler
	cache    *kerberos.Cache
	accounts *seg.Accounts
	counter  *kdcspy.Counter
	logs     *syncBuffer
	registry *prometheus.Registry
	debug    *seg.DebugDevices
	krb5     *config.Config
	dir      string
}

// rigs are the gateways made so far, one per lab.
var rigs sync.Map // *lab.Lab → *rigOnce

type rigOnce struct {
	once sync.Once
	r    *rig
	err  error
}

// getRig is the gateway on the test binary's lab.
func getRig(t testing.TB) *rig { t.Helper(); return rigOn(t, theLab.Get(t)) }

// ownRig is a gateway on a lab no other test binary uses, for a test that
// stops the DC.
func ownRig(t testing.TB) *rig { t.Helper(); return rigOn(t, theLab.Own(t)) }

func rigOn(t testing.TB, l *lab.Lab) *rig {
	t.Helper()
	v, _ := rigs.LoadOrStore(l, &rigOnce{})
	o := v.(*rigOnce)
	o.once.Do(func() { o.r, o.err = newRig(l) })
	if o.err != nil {
		t.Fatalf("gateway rig: %v", o.err)
	}
	return o.r
}

func isoUser(i int) string { return fmt.Sprintf("iso%02d", i) }

func newRig(l *lab.Lab) (*rig, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := &rig{lab: l, spn: "http/mail-seg." + l.DNSDomain, spn2: "http/mail2-seg." + l.DNSDomain, logs: &syncBuffer{}, debug: &seg.DebugDevices{}}
	var err error
	if r.dir, err = os.MkdirTemp("", "seg-test-"); err != nil {
		return nil, err
	}
	if err := l.ProvisionKCD(ctx, lab.KCD{ASA: asaName, ASAPassword: asaPassword, Service: svcName, Password: svcPassword,
		SPNs: []string{r.spn, r.spn2}}); err != nil {
		return nil, err
	}
	c, err := l.Dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	for _, u := range append([]string{"cold1", "outage1"}, isoNames()...) {
		if _, err := c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: u, Password: lab.UserPassword,
			UserPrincipalName: u + "@" + l.DNSDomain, PasswordNeverExpires: true}); err != nil {
			return nil, err
		}
	}
	// Names that are not their accounts: xsmith's UPN is alice2@<an
	// alternative suffix> while another account is called alice2, and
	// jdoe's UPN is j.doe@<domain>. (Samba refuses a UPN that collides with
	// an implied sAMAccountName@<dns domain>, hence the alternative suffix.)
	for _, u := range [][2]string{{"xsmith", "alice2@" + altSuffix}, {"alice2", "alice2@" + l.DNSDomain}, {"jdoe", "j.doe@" + l.DNSDomain}} {
		if _, err := c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: u[0], Password: lab.UserPassword,
			UserPrincipalName: u[1], PasswordNeverExpires: true}); err != nil {
			return nil, err
		}
	}
	// A lockout threshold, so that the Basic test can show that a wrong
	// password does not lock anyone out: a password settings object that
	// only the test's own users get (lockoutPSO), since other test binaries
	// share the domain.
	if out, err := l.SambaTool(ctx, "domain", "passwordsettings", "pso", "create", lockoutPSO, "10",
		"--account-lockout-threshold=5"); err != nil && !strings.Contains(out, "already exists") {
		return nil, fmt.Errorf("%v: %s", err, out)
	}

	kt, err := l.ExportKeytab(ctx, asaName+"$")
	if err != nil {
		return nil, err
	}
	// Exchange with Extended Protection set to Require, as Exchange 2019
	// CU14 and later have it: every test here sends bound tokens.
	r.asa = &kerberos.Acceptor{Keytab: kt, Principal: asaName + "$", TokenChecking: kerberos.TokenCheckingRequire}
	r.exchange = eastest.NewServer(r.asa)

	cfg, err := kerberos.LoadConfig(l.Krb5Conf)
	if err != nil {
		return nil, err
	}
	r.krb5 = cfg
	r.counter = &kdcspy.Counter{}
	// The default attempt timeout (3s): Samba's KDC drops SYNs when its
	// listen backlog is full, and a shorter one fails before the client's
	// first SYN retransmission (1s) has a chance.
	tr := &kerberos.Transport{Config: cfg, Dialer: r.counter}
	svc := kerberos.NewWithPassword(svcName, l.Realm, svcPassword, cfg)
	svc.Transport = tr
	r.cache = &kerberos.Cache{Source: svc}
	r.registry = prometheus.NewRegistry()
	metrics, err := seg.NewMetrics(r.registry)
	if err != nil {
		return nil, err
	}
	metrics.KDC(tr)
	if err := metrics.Cache(r.cache); err != nil {
		return nil, err
	}

	if r.ca, err = testpki.New("segkcd test device CA"); err != nil {
		return nil, err
	}
	crl, err := r.ca.CRL(1)
	if err != nil {
		return nil, err
	}
	if r.crlPath, err = testpki.WriteFile(r.dir, "devices.crl", crl); err != nil {
		return nil, err
	}
	serverCert, err := r.ca.Server()
	if err != nil {
		return nil, err
	}
	r.accounts = &seg.Accounts{Resolver: svc}
	names := seg.Names{Realm: l.Realm, NetBIOS: l.Domain, Suffixes: []string{altSuffix}, Accounts: r.accounts}
	certs := &seg.CertificateAuth{Names: names, Revocation: &seg.CRL{Files: []string{r.crlPath}}}
	basic := &seg.BasicAuth{Realm: l.Realm, Config: cfg, Transport: tr, Names: names, Service: svc}
	target, _ := url.Parse(r.exchange.URL)
	r.handler = &seg.ProxyHandler{
		Upstreams:     []*seg.Upstream{{URL: target, SPN: r.spn}},
		Tickets:       r.cache,
		Authenticate:  seg.AnyOf(certs.Authenticate, basic.Authenticate),
		Names:         names,
		Transport:     &seg.UserPools{TLSClientConfig: r.exchange.Client().Transport.(*http.Transport).TLSClientConfig},
		TicketTimeout: 5 * time.Second,
		Metrics:       metrics,
		Debug:         r.debug,
		// Refusals answered at once, and not counted per source: the
		// subtests refuse hundreds of logins, all from loopback
		// (testFailedLoginsPerSource and the unit tests cover both).
		FailedLoginDelay: time.Millisecond,
		FailedLoginBurst: -1,
		Logger:           slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	srv := seg.NewServer(r.handler, &tls.Config{Certificates: []tls.Certificate{serverCert.TLS},
		ClientCAs: r.ca.Pool, ClientAuth: tls.VerifyClientCertIfGiven})
	r.gateway = httptest.NewUnstartedServer(r.handler)
	r.gateway.Config = srv
	r.gateway.TLS = srv.TLSConfig
	r.gateway.StartTLS()
	return r, nil
}

var userSeq atomic.Int64

// newUser makes a user of its own for one run of a test that leaves state
// behind (remembered passwords, bad-password counts).
func (r *rig) newUser(t *testing.T, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s%d", prefix, userSeq.Add(1))
	r.newAccount(t, name, name+"@"+r.lab.DNSDomain)
	return name
}

// lockoutPSO locks an account out after 5 wrong passwords.
const lockoutPSO = "seg-lockout"

// newLockableUser is newUser with lockoutPSO applied.
func (r *rig) newLockableUser(t *testing.T, prefix string) string {
	t.Helper()
	name := r.newUser(t, prefix)
	if out, err := r.lab.SambaTool(context.Background(), "domain", "passwordsettings", "pso", "apply", lockoutPSO, name); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return name
}

// heldPing is a Ping that Exchange's stand-in holds open.
type heldPing struct {
	status chan int // its status when it ends (0: the request failed)
	cancel context.CancelFunc
}

// holdPing sends a Ping from c to url that the stand-in holds for a minute.
func holdPing(c *http.Client, url string) heldPing {
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader("<ping/>"))
	req.Header.Set(eastest.HoldHeader, "1m")
	h := heldPing{status: make(chan int, 1), cancel: cancel}
	go func() {
		resp, err := c.Do(req)
		if err != nil {
			h.status <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		h.status <- resp.StatusCode
	}()
	return h
}

func isoNames() []string {
	var n []string
	for i := 0; i < isoUsers; i++ {
		n = append(n, isoUser(i))
	}
	return n
}

// device is a phone: its own HTTP client with keep-alive connections.
func (r *rig) device(t testing.TB, cert *testpki.Issued) *http.Client {
	t.Helper()
	conf := &tls.Config{RootCAs: r.ca.Pool}
	if cert != nil {
		conf.Certificates = []tls.Certificate{cert.TLS}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: conf, MaxConnsPerHost: 4, MaxIdleConnsPerHost: 4}}
}

// cert issues a device certificate as an MDM's CA that writes SIDs does:
// the UPN, e-mail and CN as given, and the SID of the account that holds
// the UPN, read over LDAP (not through the gateway's resolver), in the SID
// extension. A UPN that no account holds gets no SID.
func (r *rig) cert(t testing.TB, upn, email, cn string) (*testpki.Issued, error) {
	t.Helper()
	spec := testpki.DeviceSpec{UPN: upn, Email: email, CN: cn}
	if upn != "" {
		if sid := r.sidOf(t, upn); sid != "" {
			spec.SID, spec.SIDIn = sid, testpki.SIDExtension
		}
	}
	return r.ca.DeviceFor(spec)
}

// dial connects to the lab's LDAPS as its administrator.
func (r *rig) dial(t testing.TB) (*ad.Conn, context.Context) {
	t.Helper()
	ctx := context.Background()
	c, err := r.lab.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c, ctx
}

// sidOf is the SID of the account that holds name (sAMAccountName or UPN),
// read over LDAP; "" when none does.
func (r *rig) sidOf(t testing.TB, name string) string {
	t.Helper()
	c, ctx := r.dial(t)
	defer c.Close()
	a, err := c.FindAccount(ctx, name)
	if err != nil {
		return ""
	}
	return a.SID
}

// forget drops the gateway's ticket of the account that holds name.
func (r *rig) forget(t testing.TB, name string) {
	t.Helper()
	r.cache.InvalidateAccount(r.sidOf(t, name), r.spn)
}

func (r *rig) deviceFor(t testing.TB, user string) *http.Client {
	t.Helper()
	cert, err := r.cert(t, user+"@"+r.lab.DNSDomain, "", user)
	if err != nil {
		t.Fatal(err)
	}
	return r.device(t, cert)
}

func (r *rig) easURL(cmd, user, device string) string {
	return r.gateway.URL + "/Microsoft-Server-ActiveSync?" + url.Values{"Cmd": {cmd}, "User": {user},
		"DeviceId": {device}, "DeviceType": {"TestPhone"}}.Encode()
}

type answer struct {
	status int
	user   string
	how    string
	body   string
	header http.Header
}

func do(t testing.TB, c *http.Client, req *http.Request) answer {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, user: resp.Header.Get(eastest.UserHeader), how: resp.Header.Get(eastest.HowHeader),
		body: string(b), header: resp.Header}
}

func post(t testing.TB, c *http.Client, url string, body string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("MS-ASProtocolVersion", "14.1")
	return do(t, c, req)
}

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
