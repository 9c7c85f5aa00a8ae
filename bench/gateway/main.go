// Command gateway benchmarks the seg gateway (examples/gateway, as deployed,
// with a device policy of every bench device and its Prometheus metrics)
// against httputil.ReverseProxy behind the same TLS, and against the
// backend directly, side by side in one run, on a lab of its own:
//
//   - warm path: throughput and p50/p99 latency, 100 users with client
//     certificates, cached tickets, a fresh authenticator per request;
//   - cold path: 1,000 concurrent first requests of one user, and 1,000
//     users, counted at a relay in front of the KDC (S4U2Self and
//     S4U2Proxy, by decoding each TGS-REQ);
//   - idle long polls: 10,000 held Pings (1,000 users x 10), resident
//     memory per held request of the proxy process.
//
// Run it as root (it raises the open-file limit for 10,000 held requests):
//
//	go run ./bench/gateway [-out bench/results/gateway.md]
//
// The roles (backend, revproxy, load, hold) are child processes of this
// one, so each has its own CPU and memory figures.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
	"github.com/segkcd/segkcd/internal/testinfra/testpki"
	"github.com/segkcd/segkcd/seg"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "backend":
			backend(os.Args[2:])
			return
		case "revproxy":
			revproxy(os.Args[2:])
			return
		case "load":
			load(os.Args[2:])
			return
		case "hold":
			hold(os.Args[2:])
			return
		case "verify":
			verifyBackend(os.Args[2:])
			return
		case "stormload":
			stormLoad(os.Args[2:])
			return
		case "eas":
			easRole(os.Args[2:])
			return
		case "phones":
			soakPhones(os.Args[2:])
			return
		case "soak":
			if err := soak(os.Args[2:]); err != nil {
				log.Fatal(err)
			}
			return
		case "storm":
			if err := storm(os.Args[2:]); err != nil {
				log.Fatal(err)
			}
			return
		case "abuse":
			if err := abuse(os.Args[2:]); err != nil {
				log.Fatal(err)
			}
			return
		case "legit":
			legit(os.Args[2:])
			return
		case "attack":
			attack(os.Args[2:])
			return
		}
	}
	out := flag.String("out", "bench/results/gateway.md", "where to write the results")
	users := flag.Int("users", 1000, "users for the cold path and the held Pings")
	warmUsers := flag.Int("warm-users", 100, "users for the warm path")
	perUser := flag.Int("per-user", 10, "held Pings per user")
	d := flag.Duration("duration", 10*time.Second, "each warm-path run")
	rounds := flag.Int("rounds", 3, "warm-path runs per target (median reported)")
	heldOnly := flag.Bool("held-only", false, "measure the held Pings only (no cold or warm path)")
	answer := flag.String("answer", "begun", "held Pings' answers: begun (first line at once, the rest held) or quiet (never begun, as Exchange holds a Ping)")
	flag.Parse()
	if *warmUsers > *users {
		log.Fatal("bench: -warm-users must not exceed -users")
	}
	if *answer != "begun" && *answer != "quiet" {
		log.Fatalf("bench: -answer %q: want begun or quiet", *answer)
	}
	if err := run(*out, *users, *warmUsers, *perUser, *d, *rounds, *heldOnly, *answer == "quiet"); err != nil {
		log.Fatal(err)
	}
}

const (
	svcPassword = "Bench-Svc-Passw0rd!"
	asaPassword = "Bench-Asa-Rolled-Passw0rd-1234567890!"
)

type bench struct {
	dir, self, gatewayBin string
	lab                   *lab.Lab
	relay                 *kdcRelay
	spn                   string
	report                strings.Builder
	sidsMu                sync.Mutex
	sids                  map[string]string // each user's SID, as LDAP says
}

func (b *bench) printf(format string, args ...any) {
	fmt.Fprintf(&b.report, format, args...)
	fmt.Printf(format, args...)
}

func run(out string, users, warmUsers, perUser int, d time.Duration, rounds int, heldOnly, quiet bool) error {
	heldUsers := users
	// 10,000 held requests: the proxy holds 20,000 sockets, the backend and
	// the load generator 10,000 each. Without CAP_SYS_RESOURCE (some
	// sandboxes drop it, even for root) the hard limit stays, and the held
	// Pings are cut to what one proxy process can hold.
	if limit, err := raiseFiles(); err != nil {
		if fit := (limit - 400) / 2 / perUser; fit < users {
			log.Printf("bench: the open-file limit is %d and cannot be raised (%v): held Pings cut to %d users × %d", limit, err, fit, perUser)
			heldUsers = fit
		}
	}
	ctx := context.Background()
	start := time.Now()
	b, err := setUp(ctx, append([]string{"bcold"}, names(users)...), perUser)
	if err != nil {
		return err
	}
	defer b.close()
	backendAddr := freeAddr()
	stopBackend, backendPID, err := b.child("backend", "-addr", backendAddr, "-dir", b.dir)
	if err != nil {
		return err
	}
	defer stopBackend()
	backendURL := "https://" + backendAddr

	b.printf("# seg gateway benchmarks (%s)\n\n", time.Now().UTC().Format("2006-01-02"))
	b.printf("%d cores; lab Samba KDC on loopback; %d users made in %v.\n\n", numCPU(), users+1, time.Since(start).Round(time.Second))
	if heldOnly {
		if err := b.heldPings(backendURL, heldUsers, perUser, quiet); err != nil {
			return err
		}
		return os.WriteFile(out, []byte(b.report.String()), 0o644)
	}

	// Cold path.
	gw, err := b.startGateway(backendURL)
	if err != nil {
		return err
	}
	defer gw.stop()
	if err := b.coldPath(gw, users); err != nil {
		return err
	}

	// Warm path.
	rpAddr := freeAddr()
	stopRP, rpPID, err := b.child("revproxy", "-addr", rpAddr, "-target", backendURL, "-dir", b.dir)
	if err != nil {
		return err
	}
	defer stopRP()
	// The same peer sending a Negotiate header of the size of seg's (an
	// AES ticket and its authenticator, about 1.7 KB): the backend then
	// reads what it reads from seg, and the ratio is the proxies' alone.
	rpnAddr := freeAddr()
	stopRPN, rpnPID, err := b.child("revproxy", "-addr", rpnAddr, "-target", backendURL, "-dir", b.dir, "-negotiate", "1700")
	if err != nil {
		return err
	}
	defer stopRPN()
	targets := []struct {
		name, url string
		pid       int
	}{
		{"backend directly", backendURL, 0},
		{"httputil.ReverseProxy", "https://" + rpAddr, rpPID},
		{"httputil.ReverseProxy + a Negotiate header of seg's size", "https://" + rpnAddr, rpnPID},
		{"seg gateway", gw.url, gw.cmd.Process.Pid},
	}
	results := map[string][]loadResult{}
	cpuPerReq := map[string][]float64{}     // proxy process, µs of CPU per request
	backendPerReq := map[string][]float64{} // backend process
	for _, t := range targets {
		b.load(t.url, warmUsers, 2*time.Second, 0) // warm: connections, tickets
	}
	for r := 0; r < rounds; r++ {
		for _, t := range targets {
			p0, b0 := cpuTime(t.pid), cpuTime(backendPID)
			res, err := b.load(t.url, warmUsers, d, 0)
			if err != nil {
				return err
			}
			p1, b1 := cpuTime(t.pid), cpuTime(backendPID)
			results[t.name] = append(results[t.name], res)
			if res.Requests > 0 {
				cpuPerReq[t.name] = append(cpuPerReq[t.name], float64(p1-p0)/float64(res.Requests))
				backendPerReq[t.name] = append(backendPerReq[t.name], float64(b1-b0)/float64(res.Requests))
			}
		}
	}
	b.printf("## Warm path: %d users, %d devices in parallel, %v per run, median of %d runs\n\n", warmUsers, warmUsers, d, rounds)
	b.printf("| target | requests/s | p50 | p99 | errors | throughput vs ReverseProxy | proxy CPU per request | backend CPU per request |\n|---|---|---|---|---|---|---|---|\n")
	rpRPS := median(results["httputil.ReverseProxy"]).RPS
	for _, t := range targets {
		m := median(results[t.name])
		proxyCPU := "—"
		if t.pid != 0 {
			proxyCPU = fmt.Sprintf("%.0f µs", medianOf(cpuPerReq[t.name]))
		}
		b.printf("| %s | %.0f | %.2f ms | %.2f ms | %d | %.2f× | %s | %.0f µs |\n", t.name, m.RPS, m.P50, m.P99, m.Errors, m.RPS/rpRPS,
			proxyCPU, medianOf(backendPerReq[t.name]))
	}
	b.printf("\nAll runs (req/s): ")
	for _, t := range targets {
		var s []string
		for _, r := range results[t.name] {
			s = append(s, fmt.Sprintf("%.0f", r.RPS))
		}
		b.printf("%s %s; ", t.name, strings.Join(s, ", "))
	}
	b.printf("\n\n")

	// Latency under a load both can carry: open loop at 80% of the
	// ReverseProxy's maximum, each request timed from when it was due.
	rate := 0.8 * rpRPS
	b.printf("## Warm path at 80%% of the ReverseProxy's maximum: %.0f requests/s offered (open loop), %v per run, median of %d runs\n\n", rate, d, rounds)
	b.printf("| target | requests/s carried | p50 | p99 | errors |\n|---|---|---|---|---|\n")
	for _, t := range targets[1:] {
		var rs []loadResult
		for r := 0; r < rounds; r++ {
			res, err := b.load(t.url, warmUsers, d, rate)
			if err != nil {
				return err
			}
			rs = append(rs, res)
		}
		sort.Slice(rs, func(i, j int) bool { return rs[i].P99 < rs[j].P99 })
		m := rs[len(rs)/2]
		var p99s []string
		for _, r := range rs {
			p99s = append(p99s, fmt.Sprintf("%.2f", r.P99))
		}
		b.printf("| %s | %.0f | %.2f ms | %.2f ms (runs: %s) | %d |\n", t.name, m.RPS, m.P50, m.P99, strings.Join(p99s, ", "), m.Errors)
	}
	b.printf("\n")
	gw.stop()
	stopRP()

	// Idle long polls, on fresh proxy processes.
	if err := b.heldPings(backendURL, heldUsers, perUser, quiet); err != nil {
		return err
	}
	return os.WriteFile(out, []byte(b.report.String()), 0o644)
}

// raiseFiles raises the open-file limit to 200,000, or to the hard limit
// when it cannot (then with the error), and returns it.
func raiseFiles() (int, error) {
	lim := syscall.Rlimit{Cur: 200000, Max: 200000}
	err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	if err != nil {
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	return int(lim.Cur), err
}

// setUp builds examples/gateway, starts a lab with the KCD set-up it
// needs, and makes the users with their certificates (and perUser held-Ping
// devices each in the policy) and the KDC relay. close undoes it.
func setUp(ctx context.Context, users []string, perUser int) (b *bench, err error) {
	b = &bench{}
	if b.self, err = os.Executable(); err != nil {
		return nil, err
	}
	if b.dir, err = os.MkdirTemp("", "segkcd-bench-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	b.gatewayBin = filepath.Join(b.dir, "gateway")
	if out, err := exec.Command("go", "build", "-o", b.gatewayBin, "./examples/gateway").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build examples/gateway: %v\n%s", err, out)
	}
	if b.lab, err = lab.Start(ctx, lab.Options{Log: os.Stderr}); err != nil {
		return nil, err
	}
	b.spn = "http/mail." + b.lab.DNSDomain
	if err := b.lab.ProvisionKCD(ctx, lab.KCD{ASA: "EXCHASA", ASAPassword: asaPassword, Service: "svc_awseg",
		Password: svcPassword, SPNs: []string{b.spn}}); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := b.makeUsers(ctx, users); err != nil {
		return nil, err
	}
	log.Printf("bench: %d users created in %v", len(users), time.Since(start).Round(time.Millisecond))
	if err := b.makeFiles(users, perUser); err != nil {
		return nil, err
	}
	if b.relay, err = newKDCRelay(b.lab.KDCAddr()); err != nil {
		return nil, err
	}
	return b, b.writeKrb5(0)
}

func (b *bench) close() {
	if b.lab != nil {
		b.lab.Close()
	}
	os.RemoveAll(b.dir)
}

func numCPU() int {
	n := 0
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "processor") {
			n++
		}
	}
	return n
}

func names(n int) []string {
	var s []string
	for i := 0; i < n; i++ {
		s = append(s, userName(i))
	}
	return s
}

// makeUsers creates the users over 4 LDAP connections in parallel.
func (b *bench) makeUsers(ctx context.Context, users []string) error {
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c, err := b.lab.Dial(ctx)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for i := w; i < len(users); i += 4 {
				if _, err := c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: users[i], Password: lab.UserPassword,
					UserPrincipalName: users[i] + "@" + b.lab.DNSDomain, PasswordNeverExpires: true}); err != nil {
					errs <- err
					return
				}
				a, err := c.FindAccount(ctx, users[i])
				if err != nil {
					errs <- err
					return
				}
				b.sidsMu.Lock()
				if b.sids == nil {
					b.sids = map[string]string{}
				}
				b.sids[users[i]] = a.SID
				b.sidsMu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// makeFiles writes the CA, the server certificate (gateway, ReverseProxy
// and backend share it), an empty CRL and a certificate per user.
func (b *bench) makeFiles(users []string, perUser int) error {
	ca, err := testpki.New("bench device CA")
	if err != nil {
		return err
	}
	server, err := ca.Server()
	if err != nil {
		return err
	}
	crl, err := ca.CRL(1)
	if err != nil {
		return err
	}
	// The device policy the gateway runs with: every bench device enrolled
	// and managed, the rules a production policy has.
	rules := seg.PolicyRules{Block: seg.PolicyList{Devices: []string{"STOLEN"}, UserAgents: []string{"^EvilSync"}},
		Rules:   seg.PolicyChecks{RequireManaged: true, BlockCompromised: true, MailClients: []string{"^Go-http-client", "^Apple-iPhone"}},
		Devices: map[string]seg.DeviceState{}}
	// The MDM names each enrolled user by SID, as the directory gives it:
	// the gateway then asks the KDC nothing to load the policy.
	for _, u := range users {
		rules.Devices["BENCH"+u] = seg.DeviceState{User: b.sids[u], Managed: true}
		for j := 0; j < perUser; j++ { // the held Pings' devices (bench hold)
			rules.Devices[fmt.Sprintf("H%sD%d", u, j)] = seg.DeviceState{User: b.sids[u], Managed: true}
		}
	}
	policy, err := json.Marshal(rules)
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{"ca.pem": ca.PEM, "server.crt": server.CertPEM, "server.key": server.KeyPEM,
		"devices.crl": crl, "svc.password": []byte(svcPassword), "policy.json": policy} {
		if _, err := testpki.WriteFile(b.dir, name, data); err != nil {
			return err
		}
	}
	udir := filepath.Join(b.dir, "users")
	if err := os.MkdirAll(udir, 0o700); err != nil {
		return err
	}
	// Certificates from the trusted CA for UPNs no account holds (the
	// abuse bench's certificate flood), written by the CA as any other.
	sdir := filepath.Join(b.dir, "strangers")
	if err := os.MkdirAll(sdir, 0o700); err != nil {
		return err
	}
	for i := range strangerCerts {
		dev, err := ca.DeviceFor(testpki.DeviceSpec{UPN: fmt.Sprintf("stranger%03d@%s", i, b.lab.DNSDomain)})
		if err != nil {
			return err
		}
		if _, err := testpki.WriteFile(sdir, fmt.Sprintf("s%03d.crt", i), dev.CertPEM); err != nil {
			return err
		}
		if _, err := testpki.WriteFile(sdir, fmt.Sprintf("s%03d.key", i), dev.KeyPEM); err != nil {
			return err
		}
	}
	for _, u := range users {
		// As a Windows CA writes them: the account's SID in the SID
		// extension (the gateway's default mapping, full, requires it).
		dev, err := ca.DeviceFor(testpki.DeviceSpec{UPN: u + "@" + b.lab.DNSDomain, SID: b.sids[u], SIDIn: testpki.SIDExtension})
		if err != nil {
			return err
		}
		if _, err := testpki.WriteFile(udir, u+".crt", dev.CertPEM); err != nil {
			return err
		}
		if _, err := testpki.WriteFile(udir, u+".key", dev.KeyPEM); err != nil {
			return err
		}
	}
	return nil
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// child starts a role of this program and waits for its "ready" line.
func (b *bench) child(role string, args ...string) (stop func(), pid int, err error) {
	cmd := b.command(role, args...)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "ready") {
		cmd.Process.Kill()
		return nil, 0, fmt.Errorf("%s did not start", role)
	}
	go io.Copy(io.Discard, stdout)
	var once sync.Once
	return func() { once.Do(func() { cmd.Process.Kill(); cmd.Wait() }) }, cmd.Process.Pid, nil
}

// command is a role of this program as a child that dies with it.
func (b *bench) command(role string, args ...string) *exec.Cmd {
	cmd := exec.Command(b.self, append([]string{role}, args...)...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// writeKrb5 writes the gateway's krb5.conf, with the KDC behind the
// relay; a lifetime other than 0 is its ticket_lifetime (the tickets the
// gateway asks for, AS and TGS: Samba honours a shorter one).
func (b *bench) writeKrb5(lifetime time.Duration) error {
	life := ""
	if lifetime > 0 {
		life = fmt.Sprintf(" ticket_lifetime = %ds\n", int(lifetime.Seconds()))
	}
	krb5 := fmt.Sprintf("[libdefaults]\n default_realm = %s\n udp_preference_limit = 1\n dns_lookup_kdc = false\n rdns = false\n%s"+
		"[realms]\n %s = {\n  kdc = %s\n }\n", b.lab.Realm, life, b.lab.Realm, b.relay.addr)
	_, err := testpki.WriteFile(b.dir, "krb5.conf", []byte(krb5))
	return err
}

type gatewayProc struct {
	cmd  *exec.Cmd
	url  string
	stop func()
}

// startGateway runs examples/gateway as an administrator would.
// extra adds to (or replaces) keys of its configuration.
func (b *bench) startGateway(backendURL string, extra ...map[string]any) (*gatewayProc, error) {
	addr := freeAddr()
	conf := map[string]any{
		"listen": addr, "tls_cert": filepath.Join(b.dir, "server.crt"), "tls_key": filepath.Join(b.dir, "server.key"),
		"client_ca_files": []string{filepath.Join(b.dir, "ca.pem")}, "crl_files": []string{filepath.Join(b.dir, "devices.crl")},
		"realm": b.lab.Realm, "netbios": b.lab.Domain, "krb5_conf": filepath.Join(b.dir, "krb5.conf"),
		"service_account": "svc_awseg", "password_file": filepath.Join(b.dir, "svc.password"),
		"exchange_url": backendURL, "exchange_spn": b.spn, "exchange_ca_file": filepath.Join(b.dir, "ca.pem"),
		"policy": map[string]any{"file": filepath.Join(b.dir, "policy.json")},
	}
	for _, e := range extra {
		for k, v := range e {
			conf[k] = v
		}
	}
	j, _ := json.Marshal(conf)
	path, err := testpki.WriteFile(b.dir, "gateway.json", j)
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(b.dir, "gateway.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(b.gatewayBin, "-config", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var once sync.Once
	g := &gatewayProc{cmd: cmd, url: "https://" + addr, stop: func() { once.Do(func() { cmd.Process.Kill(); cmd.Wait(); logf.Close() }) }}
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return g, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	g.stop()
	return nil, fmt.Errorf("the gateway did not start; see %s", filepath.Join(b.dir, "gateway.log"))
}

// load runs the load role; rate 0 is a closed loop (as fast as it goes).
func (b *bench) load(url string, users int, d time.Duration, rate float64) (loadResult, error) {
	out, err := b.command("load", "-url", url, "-dir", b.dir, "-users", strconv.Itoa(users),
		"-conns", strconv.Itoa(users), "-duration", d.String(), "-rate", strconv.FormatFloat(rate, 'f', 0, 64)).Output()
	if err != nil {
		return loadResult{}, fmt.Errorf("load %s: %v", url, err)
	}
	var r loadResult
	return r, json.Unmarshal(out, &r)
}

func median(rs []loadResult) loadResult {
	s := append([]loadResult(nil), rs...)
	sort.Slice(s, func(i, j int) bool { return s[i].RPS < s[j].RPS })
	return s[len(s)/2]
}

// coldPath counts KDC exchanges at the relay.
func (b *bench) coldPath(gw *gatewayProc, users int) error {
	c0 := b.relay.Counts()
	start := time.Now()
	errs := fire(1000, 1000, func(int) (string, *http.Client) { return "bcold", device(b.dir, "bcold") }, gw.url, true)
	took := time.Since(start)
	c1 := b.relay.Counts()
	b.printf("## Cold path, counted at a relay in front of the KDC\n\n")
	b.printf("| load | S4U2Self | S4U2Proxy | failed requests | wall time |\n|---|---|---|---|---|\n")
	b.printf("| 1,000 concurrent first requests of one user | %d | %d | %d | %v |\n", c1.S4U2Self-c0.S4U2Self, c1.S4U2Proxy-c0.S4U2Proxy, errs, took.Round(time.Millisecond))
	start = time.Now()
	errs = fire(users, 100, func(i int) (string, *http.Client) { u := userName(i); return u, device(b.dir, u) }, gw.url, false)
	took = time.Since(start)
	c2 := b.relay.Counts()
	b.printf("| %d users, one first request each, 100 at a time | %d | %d | %d | %v (%.1f new users/s) |\n\n",
		users, c2.S4U2Self-c1.S4U2Self, c2.S4U2Proxy-c1.S4U2Proxy, errs, took.Round(time.Millisecond), float64(users)/took.Seconds())
	b.printf("KDC requests sent again after a timeout (same nonce), not counted above: %d.\n\n", b.relay.Counts().Resent)
	return nil
}

// fire sends n FolderSyncs, conc at a time, each from the device dev(i)
// gives. Not Syncs: the gateway bounds a user's long polls (Ping and Sync,
// MaxLongPollsPerUser), and the cold path sends 1,000 at once for one user.
// With shared, all requests use one client (one user's phone, many
// connections).
func fire(n, conc int, dev func(int) (string, *http.Client), base string, shared bool) int {
	var mu sync.Mutex
	failed := 0
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	var one *http.Client
	var oneUser string
	if shared {
		oneUser, one = dev(0)
	}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			user, c := oneUser, one
			if !shared {
				user, c = dev(i)
			}
			resp, err := c.Post(cmdURL(base, "FolderSync", user), "", nil)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if !shared {
				// One request per phone: its connection is not kept, so it
				// does not count against the proxy's open files later.
				c.CloseIdleConnections()
			}
			if err != nil || resp.StatusCode != 200 {
				mu.Lock()
				failed++
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	return failed
}

// heldPings measures the resident memory each held Ping costs a proxy, at
// growing counts: the slope of RSS over held Pings (least squares), and
// the resident memory at each step.
func (b *bench) heldPings(backendURL string, users, perUser int, quiet bool) error {
	type proxy struct {
		name string
		url  string
		pid  int
	}
	gw, err := b.startGateway(backendURL)
	if err != nil {
		return err
	}
	defer gw.stop()
	rpAddr := freeAddr()
	rpCmd := b.command("revproxy", "-addr", rpAddr, "-target", backendURL, "-dir", b.dir)
	rpOut, _ := rpCmd.StdoutPipe()
	if err := rpCmd.Start(); err != nil {
		return err
	}
	bufio.NewScanner(rpOut).Scan()
	defer func() { rpCmd.Process.Kill(); rpCmd.Wait() }()
	proxies := []proxy{{"httputil.ReverseProxy", "https://" + rpAddr, rpCmd.Process.Pid}, {"seg gateway", gw.url, gw.cmd.Process.Pid}}
	var steps []int // cumulative users: 1,000, 5,000 and all held Pings
	for _, n := range []int{1000, 5000} {
		if n/perUser < users {
			steps = append(steps, n/perUser)
		}
	}
	steps = append(steps, users)
	var stepArg []string
	for _, s := range steps {
		stepArg = append(stepArg, strconv.Itoa(s))
	}
	how := "each answer's first line at once, the rest held"
	if quiet {
		how = "answers that never begin, as Exchange holds a Ping"
	}
	b.printf("## Idle long polls: held Pings in steps up to %d (%d users × %d), %s, fresh proxy processes\n\n", users*perUser, users, perUser, how)
	b.printf("| proxy | RSS before |")
	for _, s := range steps {
		b.printf(" RSS at %d held |", s*perUser)
	}
	b.printf(" slope per held Ping | ratio |\n|---|---|")
	for range steps {
		b.printf("---|")
	}
	b.printf("---|---|\n")
	var base float64
	for _, p := range proxies {
		// The same warm-up for both: one request per user (the gateway
		// caches each user's ticket).
		fire(users, 100, func(i int) (string, *http.Client) { u := userName(i); return u, device(b.dir, u) }, p.url, false)
		time.Sleep(time.Second)
		before := rss(p.pid)
		cmd := b.command("hold", "-url", p.url, "-dir", b.dir, "-users", strings.Join(stepArg, ","), "-per-user", strconv.Itoa(perUser),
			"-quiet="+strconv.FormatBool(quiet))
		out, _ := cmd.StdoutPipe()
		in, _ := cmd.StdinPipe()
		if err := cmd.Start(); err != nil {
			return err
		}
		sc := bufio.NewScanner(out)
		xs, ys := []float64{0}, []float64{float64(before)}
		row := fmt.Sprintf("| %s | %.1f MiB |", p.name, float64(before)/1024)
		for _, s := range steps {
			sc.Scan()
			log.Printf("bench: %s: %s", p.name, sc.Text())
			time.Sleep(2 * time.Second)
			r := rss(p.pid)
			xs, ys = append(xs, float64(s*perUser)), append(ys, float64(r))
			row += fmt.Sprintf(" %.1f MiB |", float64(r)/1024)
			io.WriteString(in, "\n")
		}
		cmd.Process.Kill()
		cmd.Wait()
		slope := slopeOf(xs, ys)
		if base == 0 {
			base = slope
		}
		b.printf("%s %.1f KiB | %.2f× |\n", row, slope, slope/base)
		time.Sleep(2 * time.Second) // let the held connections close
	}
	b.printf("\n")
	return nil
}

// slopeOf is the least-squares slope of y over x.
func slopeOf(xs, ys []float64) float64 {
	var mx, my float64
	for i := range xs {
		mx, my = mx+xs[i], my+ys[i]
	}
	mx, my = mx/float64(len(xs)), my/float64(len(ys))
	var num, den float64
	for i := range xs {
		num += (xs[i] - mx) * (ys[i] - my)
		den += (xs[i] - mx) * (xs[i] - mx)
	}
	return num / den
}

func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// cpuTime is the user+system CPU a process has used, in µs (0 for pid 0).
func cpuTime(pid int) int64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces): utime is the
	// 12th, stime the 13th, in clock ticks (100 a second on Linux).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return (ut + st) * 10000
}

// rss is the resident set of a process in KiB.
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

// tcpCounters reads the host's TCP counters of /proc/net/netstat (TcpExt):
// SYNs sent again and connections a full listen queue dropped explain
// latencies of about a second (the first SYN retransmission).
func tcpCounters() map[string]int64 {
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return nil
	}
	lines := strings.Split(string(b), "\n")
	out := map[string]int64{}
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" || len(names) != len(values) {
			continue
		}
		for j := 1; j < len(names); j++ {
			switch names[j] {
			case "ListenOverflows", "ListenDrops", "TCPSynRetrans":
				out[names[j]], _ = strconv.ParseInt(values[j], 10, 64)
			}
		}
	}
	return out
}
