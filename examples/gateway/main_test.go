package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segkcd/segkcd/examples/internal/siteconfig"
	"github.com/segkcd/segkcd/internal/testinfra/eastest"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
	"github.com/segkcd/segkcd/internal/testinfra/testpki"
	"github.com/segkcd/segkcd/kerberos"
)

var theLab lab.Shared

// twoDCs is a domain of two DCs (issue 28).
var twoDCs lab.SharedDCs

func TestMain(m *testing.M) {
	code := theLab.Run(m)
	twoDCs.Close()
	os.Exit(code)
}

const (
	svcPassword = "Gw-Svc-Passw0rd!"
	asaPassword = "Gw-Asa-Rolled-Passw0rd-1234567890!"
)

// fixture is a lab with KCD, the Exchange stand-in, a device CA and the
// files of a configuration.
type fixture struct {
	lab      *lab.Lab
	dir      string
	exchange *eastest.Server
	ca       *testpki.CA
	conf     config
	confPath string
	bin      string
}

// deviceFiles writes user's device certificate and key (deviceCert) to
// files for curl's --cert and --key.
func (f *fixture) deviceFiles(t testing.TB, user string) (cert, key string) {
	t.Helper()
	d, err := f.deviceCert(t, user)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ = testpki.WriteFile(f.dir, user+".crt", d.CertPEM)
	key, _ = testpki.WriteFile(f.dir, user+".key", d.KeyPEM)
	return cert, key
}

// deviceCert issues the device certificate of user as an MDM's CA that
// writes SIDs does: the UPN, and the account's SID (read over LDAP) in the
// SID extension, which the gateway's default mapping (full) requires.
func (f *fixture) deviceCert(t testing.TB, user string) (*testpki.Issued, error) {
	t.Helper()
	ctx := context.Background()
	c, err := f.lab.Dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	a, err := c.FindAccount(ctx, user)
	if err != nil {
		return nil, err
	}
	return f.ca.DeviceFor(testpki.DeviceSpec{UPN: user + "@" + f.lab.DNSDomain, SID: a.SID, SIDIn: testpki.SIDExtension})
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureOn(t, theLab.Get(t))
}

// newFixtureOn is newFixture on the domain of the DC l.
func newFixtureOn(t *testing.T, l *lab.Lab) *fixture {
	t.Helper()
	ctx := context.Background()
	spn := "http/mail-gw." + l.DNSDomain
	if err := l.ProvisionKCD(ctx, lab.KCD{ASA: "GWASA", ASAPassword: asaPassword, Service: "svc_gw", Password: svcPassword,
		SPNs: []string{spn}}); err != nil {
		t.Fatal(err)
	}
	kt, err := l.ExportKeytab(ctx, "GWASA$")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{lab: l, dir: t.TempDir()}
	// Extended Protection set to Require, as Exchange 2019 CU14 and later have it.
	f.exchange = eastest.NewServer(&kerberos.Acceptor{Keytab: kt, Principal: "GWASA$", TokenChecking: kerberos.TokenCheckingRequire})
	t.Cleanup(f.exchange.Close)
	if f.ca, err = testpki.New("gateway test device CA"); err != nil {
		t.Fatal(err)
	}
	server, err := f.ca.Server()
	if err != nil {
		t.Fatal(err)
	}
	crl, _ := f.ca.CRL(1)
	exchangeCA := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.exchange.Certificate().Raw})
	files := map[string][]byte{"gateway.crt": server.CertPEM, "gateway.key": server.KeyPEM, "devices-ca.pem": f.ca.PEM,
		"devices.crl": crl, "exchange-ca.pem": exchangeCA, "svc.password": []byte(svcPassword + "\n"),
		"policy.json": []byte(`{"block": {"devices": ["BLOCKEDPHONE"]}}`), "admin.token": []byte("admin-token-0123456789\n")}
	for name, b := range files {
		if _, err := testpki.WriteFile(f.dir, name, b); err != nil {
			t.Fatal(err)
		}
	}
	p := func(name string) string { return filepath.Join(f.dir, name) }
	f.conf = config{Listen: "127.0.0.1:0", TLSCert: p("gateway.crt"), TLSKey: p("gateway.key"),
		ClientCAFiles: []string{p("devices-ca.pem")}, CRLFiles: []string{p("devices.crl")}, Basic: true,
		Realm: l.Realm, NetBIOS: l.Domain, Krb5Conf: l.Krb5Conf, ServiceAccount: "svc_gw", PasswordFile: p("svc.password"),
		ExchangeURL: f.exchange.URL, ExchangeSPN: spn, ExchangeCAFile: p("exchange-ca.pem"), ShutdownTimeout: "20s",
		Policy: &policyConfig{File: p("policy.json"), Interval: "100ms", BlockStatus: 456},
		Admin:  &adminConfig{Listen: "127.0.0.1:0", TokenFile: p("admin.token")}}
	f.confPath = f.writeConfig(t, f.conf)
	f.bin = filepath.Join(f.dir, "gateway")
	if out, err := exec.Command("go", "build", "-o", f.bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return f
}

func (f *fixture) writeConfig(t *testing.T, c config) string {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path, err := testpki.WriteFile(f.dir, fmt.Sprintf("gateway-%d.json", time.Now().UnixNano()), b)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// process is a running gateway with its log lines.
type process struct {
	cmd   *exec.Cmd
	addr  string
	mu    sync.Mutex
	lines []string
	seen  chan string
	done  chan error
}

func (f *fixture) start(t *testing.T, args ...string) *process {
	t.Helper()
	return f.startCmd(t, exec.Command(f.bin, append([]string{"-config", f.confPath}, args...)...))
}

// startCmd starts the gateway as cmd says (in a network namespace, say)
// and waits for it to listen.
func (f *fixture) startCmd(t *testing.T, cmd *exec.Cmd) *process {
	t.Helper()
	pr := &process{cmd: cmd, seen: make(chan string, 1000), done: make(chan error, 1)}
	stderr, _ := pr.cmd.StderrPipe()
	if err := pr.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pr.cmd.Process.Kill(); <-pr.done })
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			pr.mu.Lock()
			pr.lines = append(pr.lines, sc.Text())
			pr.mu.Unlock()
			select {
			case pr.seen <- sc.Text():
			default:
			}
		}
		pr.done <- pr.cmd.Wait()
	}()
	line := pr.wait(t, `"msg":"listening"`)
	var v struct{ Addr string }
	json.Unmarshal([]byte(line), &v)
	pr.addr = v.Addr
	return pr
}

func (pr *process) wait(t *testing.T, what string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l := <-pr.seen:
			if strings.Contains(l, what) {
				return l
			}
		case err := <-pr.done:
			pr.done <- err
			t.Fatalf("gateway exited (%v) before %q:\n%s", err, what, pr.log())
		case <-timeout:
			t.Fatalf("no %q in:\n%s", what, pr.log())
		}
	}
}

func (pr *process) log() string {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return strings.Join(pr.lines, "\n")
}

// curl runs curl against the gateway; it returns the status and the body.
func (f *fixture) curl(t *testing.T, pr *process, query string, args ...string) (int, string) {
	t.Helper()
	url := "https://" + pr.addr + "/Microsoft-Server-ActiveSync?" + query
	out, err := exec.Command("curl", append([]string{"-sS", "-X", "POST", "-d", "", "--cacert", filepath.Join(f.dir, "devices-ca.pem"),
		"-H", "MS-ASProtocolVersion: 14.1", "-w", "\n%{http_code}", url}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	s := strings.TrimSpace(string(out))
	i := strings.LastIndexByte(s, '\n')
	var code int
	fmt.Sscan(s[i+1:], &code)
	if i < 0 {
		return code, ""
	}
	return code, strings.TrimSpace(s[:i])
}

func TestGatewayProgram(t *testing.T) {
	f := newFixture(t)
	pr := f.start(t)

	// curl with alice's client certificate.
	alice, err := f.deviceCert(t, "alice")
	if err != nil {
		t.Fatal(err)
	}
	certFile, _ := testpki.WriteFile(f.dir, "alice.crt", alice.CertPEM)
	keyFile, _ := testpki.WriteFile(f.dir, "alice.key", alice.KeyPEM)
	if code, body := f.curl(t, pr, "Cmd=FolderSync&User=alice&DeviceId=CURL1&DeviceType=curl", "--cert", certFile, "--key", keyFile); code != 200 || body != "alice" {
		t.Errorf("alice by certificate: %d %q", code, body)
	}
	// curl with Basic; the password goes to curl in a netrc file, never on
	// its command line.
	netrc, _ := testpki.WriteFile(f.dir, "netrc", []byte(fmt.Sprintf("machine 127.0.0.1 login bob password %s\n", lab.UserPassword)))
	if code, body := f.curl(t, pr, "Cmd=Sync&User=bob&DeviceId=CURL2&DeviceType=curl", "--netrc-file", netrc); code != 200 || body != "bob" {
		t.Errorf("bob by Basic: %d %q", code, body)
	}
	if code, _ := f.curl(t, pr, "Cmd=Sync&User=bob&DeviceId=CURL2&DeviceType=curl"); code != 401 {
		t.Errorf("no credentials: %d", code)
	}

	// The device policy: a blocked device gets 456; a new file blocking
	// another one is picked up without a restart.
	if code, _ := f.curl(t, pr, "Cmd=Sync&User=alice&DeviceId=BLOCKEDPHONE&DeviceType=curl", "--cert", certFile, "--key", keyFile); code != 456 {
		t.Errorf("blocked device: %d", code)
	}
	policy := filepath.Join(f.dir, "policy.json")
	os.WriteFile(policy+".new", []byte(`{"block": {"devices": ["BLOCKEDPHONE", "CURL1"]}}`), 0o600)
	os.Rename(policy+".new", policy)
	pr.wait(t, `"msg":"policy loaded"`)
	if code, _ := f.curl(t, pr, "Cmd=FolderSync&User=alice&DeviceId=CURL1&DeviceType=curl", "--cert", certFile, "--key", keyFile); code != 456 {
		t.Errorf("newly blocked device: %d", code)
	}

	// The admin listener: health, readiness (a KDC answers, Exchange takes
	// a TLS connection), metrics behind the token.
	adminGet := func(path string, token bool) (int, string) { return f.admin(t, pr, path, token) }
	if code, _ := adminGet("/healthz", false); code != 200 {
		t.Errorf("healthz: %d", code)
	}
	if code, body := adminGet("/readyz", true); code != 200 {
		t.Errorf("readyz: %d %s", code, body)
	}
	if code, _ := adminGet("/metrics", false); code != 401 {
		t.Errorf("metrics without the token: %d", code)
	}
	if code, body := adminGet("/metrics", true); code != 200 || !strings.Contains(body, `seg_requests_total{cmd="FolderSync",code="200",route="activesync"}`) ||
		!strings.Contains(body, "seg_kdc_exchange_seconds") || !strings.Contains(body, `seg_policy_decisions_total{decision="block"`) {
		t.Errorf("metrics: %d\n%s", code, body)
	}
	if code, body := adminGet("/v1/policy/devices/BLOCKEDPHONE", true); code != 200 || !strings.Contains(body, "block.devices") {
		t.Errorf("policy lookup: %d %s", code, body)
	}

	// SIGHUP with a replaced certificate: new handshakes get the new one.
	fresh, err := f.ca.Server()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(f.conf.TLSCert+".new", fresh.CertPEM, 0o600)
	os.WriteFile(f.conf.TLSKey+".new", fresh.KeyPEM, 0o600)
	os.Rename(f.conf.TLSKey+".new", f.conf.TLSKey)
	os.Rename(f.conf.TLSCert+".new", f.conf.TLSCert)
	pr.cmd.Process.Signal(syscall.SIGHUP)
	pr.wait(t, "reloaded the certificate")
	conn, err := tls.Dial("tcp", pr.addr, &tls.Config{RootCAs: f.ca.Pool})
	if err != nil {
		t.Fatal(err)
	}
	if got := conn.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(fresh.Cert.SerialNumber) != 0 {
		t.Errorf("after SIGHUP the gateway shows serial %s, want %s", got, fresh.Cert.SerialNumber)
	}
	conn.Close()

	// Graceful shutdown: a Ping in flight is finished, then the program exits 0.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.ca.Pool, Certificates: []tls.Certificate{alice.TLS}}}}
	req, _ := http.NewRequest(http.MethodPost, "https://"+pr.addr+"/Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceId=P1&DeviceType=T", strings.NewReader("<ping/>"))
	req.Header.Set(eastest.HoldHeader, "2s")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 6)
	io.ReadFull(resp.Body, first)
	pr.cmd.Process.Signal(syscall.SIGTERM)
	rest, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(first)+string(rest) != "alice\ndone\n" || err != nil {
		t.Errorf("Ping across the shutdown: %q %q %v", first, rest, err)
	}
	select {
	case err := <-pr.done:
		pr.done <- err
		if err != nil {
			t.Errorf("exit: %v\n%s", err, pr.log())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the gateway did not exit after SIGTERM")
	}
	// Its log: a line per request, and no secret.
	log := pr.log()
	if !strings.Contains(log, `"user":"alice"`) || !strings.Contains(log, `"user":"bob"`) {
		t.Errorf("request lines missing:\n%s", log)
	}
	for _, secret := range []string{svcPassword, asaPassword, lab.UserPassword, "Negotiate ", "Basic "} {
		if strings.Contains(log, secret) {
			t.Errorf("the log holds %q", secret)
		}
	}
}

// TestGatewayConfigErrors: a bad configuration stops the program with one
// line that names the field.
func TestGatewayConfigErrors(t *testing.T) {
	f := newFixture(t)
	for field, mutate := range map[string]func(c *config){
		"listen":          func(c *config) { c.Listen = "" },
		"tls_cert":        func(c *config) { c.TLSCert = filepath.Join(f.dir, "missing.crt") },
		"crl_files":       func(c *config) { c.CRLFiles = nil },
		"realm":           func(c *config) { c.Realm = "corp.example.test" },
		"keytab_file":     func(c *config) { c.PasswordEnv = "SOMETHING" },
		"exchange_url":    func(c *config) { c.ExchangeURL = "http://" + strings.TrimPrefix(f.exchange.URL, "https://") },
		"client_ca_files": func(c *config) { c.ClientCAFiles, c.Basic = nil, false },
		"log_level":       func(c *config) { c.LogLevel = "loud" },
		"ticket_timeout":  func(c *config) { c.TicketTimeout = "soon" },
		"policy.block_status": func(c *config) {
			c.Policy = &policyConfig{File: c.Policy.File, BlockStatus: 500}
		},
		"policy.file":  func(c *config) { c.Policy = &policyConfig{File: c.Policy.File, URL: "https://mdm.example/p"} },
		"admin.listen": func(c *config) { c.Admin = &adminConfig{Listen: "0.0.0.0:9090"} },
		"roll.asa":     func(c *config) { c.Roll = rollSection(f, func(r *rollConfig) { r.ASA = "" }) },
		"roll.bind_password": func(c *config) {
			c.Roll = rollSection(f, func(r *rollConfig) { r.BindKeytab = filepath.Join(f.dir, "admin.token") })
		},
		"roll.servers[1]": func(c *config) {
			c.Roll = rollSection(f, func(r *rollConfig) { r.WinRM.Address, r.Servers[0].WinRM = "", "cas1:5985" })
		},
		"roll.every": func(c *config) { c.Roll = rollSection(f, func(r *rollConfig) { r.Every = "monthly" }) },
		"roll.lease": func(c *config) { c.Roll = rollSection(f, func(r *rollConfig) { r.Lease = "1m" }) },
		"roll.name": func(c *config) {
			c.Roll = rollSection(f, func(r *rollConfig) { r.Name, r.Replicas = "gw-3", []string{"gw-1", "gw-2"} })
		},
		"proxy_protocol_from": func(c *config) { c.ProxyProtocolFrom = []string{"haproxy.example"} },
		"failed_login_rate":   func(c *config) { c.FailedLoginRate = -1 },
		"write_timeout":       func(c *config) { c.WriteTimeout = "forever" },
	} {
		c := f.conf
		mutate(&c)
		path := f.writeConfig(t, c)
		// A configuration that passes by mistake would serve: bounded.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, f.bin, "-config", path).CombinedOutput()
		cancel()
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if err == nil || len(lines) != 1 || !strings.Contains(lines[0], "config: "+field+":") {
			t.Errorf("%s: %v %q", field, err, out)
		}
	}
	// An unknown field, named.
	path, _ := testpki.WriteFile(f.dir, "unknown.json", []byte(`{"listen": ":443", "exchange_ulr": "x"}`))
	if out, _ := exec.Command(f.bin, "-config", path).CombinedOutput(); !strings.Contains(string(out), "config: exchange_ulr: unknown field") {
		t.Errorf("unknown field: %q", out)
	}
	// No TLS without the development flag; with it, plain HTTP for Basic.
	c := f.conf
	c.TLSCert, c.TLSKey, c.ClientCAFiles, c.CRLFiles = "", "", nil, nil
	f.confPath = f.writeConfig(t, c)
	if out, err := exec.Command(f.bin, "-config", f.confPath).CombinedOutput(); err == nil || !strings.Contains(string(out), "config: tls_cert:") {
		t.Errorf("plain HTTP without the flag: %v %q", err, out)
	}
	pr := f.start(t, "-insecure-dev-http")
	if !strings.Contains(pr.log(), "development only") {
		t.Errorf("no warning for plain HTTP:\n%s", pr.log())
	}
	pr.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-pr.done; err != nil {
		t.Errorf("exit: %v", err)
	}
	pr.done <- nil
}

// rollSection is a valid roll section, changed by mutate.
func rollSection(f *fixture, mutate func(*rollConfig)) *rollConfig {
	r := &rollConfig{AD: siteconfig.AD{LDAPURL: f.lab.LDAPSURL(), BindUser: f.lab.AdminBindName(),
		BindPassword: siteconfig.Secret{File: filepath.Join(f.dir, "svc.password")}},
		ASA: "GWASA", Servers: []siteconfig.Server{{Name: "CAS1"}, {Name: "CAS2"}}, WinRM: siteconfig.WinRM{Address: "cas1:5985"}}
	mutate(r)
	return r
}

// TestGatewayPolicyFromMDM: the policy comes from an MDM over HTTPS with a
// bearer token and a private CA; a device the MDM blocks gets 456 before
// and after the MDM goes down.
func TestGatewayPolicyFromMDM(t *testing.T) {
	f := newFixture(t)
	var mu sync.Mutex
	down, polls, unauthorized := false, 0, 0
	mdmCert, err := f.ca.Server()
	if err != nil {
		t.Fatal(err)
	}
	mdm := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		polls++
		if r.Header.Get("Authorization") != "Bearer mdm-token-0123456789" {
			unauthorized++
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		if down {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("ETag", `"1"`)
		io.WriteString(w, `{"block": {"devices": ["MDMBLOCKED"]}}`)
	}))
	mdm.TLS = &tls.Config{Certificates: []tls.Certificate{mdmCert.TLS}}
	mdm.StartTLS()
	defer mdm.Close()
	token, _ := testpki.WriteFile(f.dir, "mdm.token", []byte("mdm-token-0123456789\n"))
	c := f.conf
	c.Policy = &policyConfig{URL: mdm.URL + "/policy", TokenFile: token, CAFile: filepath.Join(f.dir, "devices-ca.pem"),
		Interval: "200ms", BlockStatus: 456}
	f.confPath = f.writeConfig(t, c)
	pr := f.start(t)
	pr.wait(t, `"msg":"policy loaded"`)
	alice, err := f.deviceCert(t, "alice")
	if err != nil {
		t.Fatal(err)
	}
	certFile, _ := testpki.WriteFile(f.dir, "alice-mdm.crt", alice.CertPEM)
	keyFile, _ := testpki.WriteFile(f.dir, "alice-mdm.key", alice.KeyPEM)
	check := func(when string) {
		if code, _ := f.curl(t, pr, "Cmd=Sync&User=alice&DeviceId=MDMBLOCKED&DeviceType=curl", "--cert", certFile, "--key", keyFile); code != 456 {
			t.Errorf("%s: blocked device: %d", when, code)
		}
		if code, _ := f.curl(t, pr, "Cmd=Sync&User=alice&DeviceId=FINE&DeviceType=curl", "--cert", certFile, "--key", keyFile); code != 200 {
			t.Errorf("%s: other device: %d", when, code)
		}
	}
	check("MDM up")
	mu.Lock()
	down = true
	before := polls
	mu.Unlock()
	pr.wait(t, "policy source failed; keeping the last good policy")
	check("MDM down")
	mu.Lock()
	defer mu.Unlock()
	if polls <= before || unauthorized != 0 {
		t.Errorf("polls %d (before the outage %d), without the token %d", polls, before, unauthorized)
	}
}

// TestGatewayCheck: -check tries every part of a configuration without
// serving, one line each, and exits 1 when one fails, with a hint.
func TestGatewayCheck(t *testing.T) {
	f := newFixture(t)
	check := func(c config, args ...string) (string, error) {
		t.Helper()
		path := f.writeConfig(t, c)
		out, err := exec.Command(f.bin, append([]string{"-check", "-config", path}, args...)...).CombinedOutput()
		for _, secret := range []string{svcPassword, asaPassword, lab.UserPassword} {
			if strings.Contains(string(out), secret) {
				t.Errorf("-check printed %q", secret)
			}
		}
		if strings.Contains(string(out), `"msg":"listening"`) {
			t.Errorf("-check served:\n%s", out)
		}
		return string(out), err
	}
	spn := f.conf.ExchangeSPN
	aliceCert, err := f.deviceCert(t, "alice")
	if err != nil {
		t.Fatal(err)
	}
	noSID, _ := f.ca.Device("alice@"+f.lab.DNSDomain, "", "")
	aliceFile, _ := testpki.WriteFile(f.dir, "alice-sid.crt", aliceCert.CertPEM)
	noSIDFile, _ := testpki.WriteFile(f.dir, "alice-nosid.crt", noSID.CertPEM)
	out, err := check(f.conf, "-check-user", "alice", "-check-cert", aliceFile)
	// Whether a certificate is near its end (a warning) depends on the CA.
	for _, want := range []string{"ok   config:", " tls_cert: \"localhost\"", " client_ca_files ", "ok   crl_files: 1 read, none past its nextUpdate",
		"ok   krb5_conf:", "ok   password_file: set", "ok   service TGT: svc_gw@" + f.lab.Realm, "ok   ticket " + spn + ": the KDC issues it",
		"ok   delegation " + spn + ": as alice@" + f.lab.Realm + " by S4U2Self and S4U2Proxy", "ok   upstream 127.0.0.1:", "ok   policy.file:",
		"ok   cert_mapping: full", "ok   check-cert: " + aliceFile + " carries the SID S-1-5-21-", "ok   check-cert: maps to alice (S-1-5-21-",
		"ok   channel_bindings: on", "ok   channel_bindings 127.0.0.1:", "ok   rc4_cutoff: AES only: the service account's key AES256, the ticket to " + spn + " AES256"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if err != nil || strings.Contains(out, "FAIL") {
		t.Errorf("a good configuration: %v\n%s", err, out)
	}
	// A certificate without a SID: a warning that says so, and a failure
	// in full mode; compatibility maps it, with a warning for the mode.
	if out, err := check(f.conf, "-check-cert", noSIDFile); err == nil || !strings.Contains(out, "WARN check-cert: "+noSIDFile+" carries no SID") ||
		!strings.Contains(out, "FAIL check-cert: ") || !strings.Contains(out, "not strongly mapped") {
		t.Errorf("no SID, full: %v\n%s", err, out)
	}
	// Channel bindings off: a warning that names Extended Protection.
	unbound := f.conf
	unbound.ChannelBindings = "off"
	if out, err := check(unbound); err != nil || !strings.Contains(out, "WARN channel_bindings: off") || !strings.Contains(out, "Extended Protection") {
		t.Errorf("channel_bindings off: %v\n%s", err, out)
	}
	compat := f.conf
	compat.CertMapping = "compatibility"
	if out, err := check(compat, "-check-cert", noSIDFile); err != nil || !strings.Contains(out, "WARN cert_mapping: compatibility") ||
		!strings.Contains(out, "ok   check-cert: maps to alice") {
		t.Errorf("no SID, compatibility: %v\n%s", err, out)
	}

	// Each fault: its check fails, with a hint, and the others still run.
	wrongPassword, _ := testpki.WriteFile(f.dir, "wrong.password", []byte("not-the-password\n"))
	staleCRL, _ := f.ca.CRLDue(2, time.Now().Add(-time.Hour))
	stalePath, _ := testpki.WriteFile(f.dir, "stale.crl", staleCRL)
	for name, tc := range map[string]struct {
		mutate func(c *config)
		want   []string
	}{
		"wrong password": {func(c *config) { c.PasswordFile = wrongPassword },
			[]string{"FAIL service TGT:", "hint: wrong password or keytab", "ok   upstream "}},
		"SPN nobody holds": {func(c *config) { c.ExchangeSPN = "http/nosuch." + f.lab.DNSDomain },
			[]string{"FAIL ticket http/nosuch.", "hint: no account holds the Exchange SPN"}},
		"stale CRL": {func(c *config) { c.CRLFiles = []string{stalePath} },
			[]string{"FAIL crl_files: past nextUpdate: " + stalePath, "hint: fetch a fresh CRL"}},
		"Exchange not trusted": {func(c *config) { c.ExchangeCAFile = filepath.Join(f.dir, "devices-ca.pem") },
			[]string{"FAIL upstream 127.0.0.1:", "certificate signed by unknown authority", "hint: check that the gateway reaches Exchange"}},
		"KDC unreachable": {func(c *config) { c.Krb5Conf, c.KDCs = "", []string{"127.0.0.1:1"} },
			[]string{"FAIL service TGT:", "hint: no KDC answered"}},
		"bad configuration": {func(c *config) { c.Listen = "" }, []string{"FAIL config: config: listen: required"}},
	} {
		c := f.conf
		tc.mutate(&c)
		out, err := check(c)
		if err == nil {
			t.Errorf("%s: exit 0:\n%s", name, out)
		}
		for _, want := range tc.want {
			if !strings.Contains(out, want) {
				t.Errorf("%s: missing %q in:\n%s", name, want, out)
			}
		}
	}
	// A stale CRL with crl_stale: warn is a warning, not a failure.
	c := f.conf
	c.CRLFiles, c.CRLStale = []string{stalePath}, "warn"
	if out, err := check(c); err != nil || !strings.Contains(out, "WARN crl_files: past nextUpdate, accepted") {
		t.Errorf("stale CRL, warn: %v\n%s", err, out)
	}
}
