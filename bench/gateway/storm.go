package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/segkcd/segkcd/kerberos"
)

// The refresh storm: many users, all warm, with tickets the gateway asks
// the lab's Samba KDC to make short (krb5.conf ticket_lifetime; Samba
// honours a shorter lifetime than its own), while traffic goes on through
// several lifetimes. The backend checks every request's ticket with the
// ASA's keys, with no clock tolerance past the ticket's end, and that the
// ticket is for the user the request names; the phones check that the
// answer is their own.
//
//	go run ./bench/gateway storm [-users 10000 -lifetime 5m -lifetimes 3]

// stormStats is what the verifying backend counts.
type stormStats struct {
	Served     int64  `json:"served"`     // a valid ticket of the named user
	NoTicket   int64  `json:"no_ticket"`  // no Negotiate header
	Invalid    int64  `json:"invalid"`    // the Acceptor refused it
	Expired    int64  `json:"expired"`    // accepted, but past its end by our clock
	WrongUser  int64  `json:"wrong_user"` // a valid ticket of someone else
	Tickets    int64  `json:"tickets"`    // distinct tickets seen (user, end time)
	LeastLeft  string `json:"least_left"` // the least life left on a ticket served
	TicketLife string `json:"ticket_life"`
}

// verifyBackend is the storm's Exchange stand-in: every request must carry
// a Negotiate ticket the ASA's keytab opens, not past its end by this
// process's clock (gokrb5 allows 5 minutes of skew; this does not), for
// the user in the URL. GET /stats answers the counts.
func verifyBackend(args []string) {
	fs := flag.NewFlagSet("verify", flag.ExitOnError)
	addr := fs.String("addr", "", "listen address")
	dir := fs.String("dir", "", "files (server.crt, server.key, asa.keytab)")
	fs.Parse(args)
	cert := serverCert(*dir)
	kt, err := keytab.Load(filepath.Join(*dir, "asa.keytab"))
	if err != nil {
		log.Fatal(err)
	}
	acc := &kerberos.Acceptor{Keytab: kt, Principal: "EXCHASA$"}
	var served, none, invalid, expired, wrong atomic.Int64
	var mu sync.Mutex
	seen := map[string]time.Time{} // user and end time -> first seen
	least := time.Duration(1 << 62)
	var life time.Duration
	h := func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/stats" {
			mu.Lock()
			st := stormStats{Served: served.Load(), NoTicket: none.Load(), Invalid: invalid.Load(), Expired: expired.Load(),
				WrongUser: wrong.Load(), Tickets: int64(len(seen)), LeastLeft: least.Round(time.Millisecond).String(), TicketLife: life.String()}
			mu.Unlock()
			json.NewEncoder(w).Encode(st)
			return
		}
		a := r.Header.Get("Authorization")
		if a == "" {
			if r.URL.Query().Get("User") != "" { // not the gateway's health probe
				none.Add(1)
			}
			w.Header().Set("WWW-Authenticate", "Negotiate")
			w.WriteHeader(401)
			return
		}
		id, err := acc.Accept(a)
		if err != nil {
			invalid.Add(1)
			log.Printf("verify: %v", err)
			w.Header().Set("WWW-Authenticate", "Negotiate")
			w.WriteHeader(401)
			return
		}
		now := time.Now()
		if !now.Before(id.EndTime) {
			expired.Add(1)
			w.Header().Set("WWW-Authenticate", "Negotiate")
			w.WriteHeader(401)
			return
		}
		if !strings.EqualFold(id.User, r.URL.Query().Get("User")) {
			wrong.Add(1)
			w.WriteHeader(403)
			return
		}
		mu.Lock()
		k := id.User + "|" + id.EndTime.String()
		if _, ok := seen[k]; !ok {
			seen[k] = now
		}
		least = min(least, id.EndTime.Sub(now))
		life = max(life, id.EndTime.Sub(id.StartTime))
		mu.Unlock()
		served.Add(1)
		io.WriteString(w, id.User+"\n")
	}
	srv := &http.Server{Handler: http.HandlerFunc(h), TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}, ReadHeaderTimeout: 30 * time.Second}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("ready")
	log.Fatal(srv.ServeTLS(ln, "", ""))
}

// stormResult is what stormLoad reports.
type stormResult struct {
	Requests int64            `json:"requests"`
	OK       int64            `json:"ok"`
	Errors   map[string]int64 `json:"errors"` // by kind
	NotMine  int64            `json:"not_mine"`
	P50      float64          `json:"p50_ms,omitempty"`
	P99      float64          `json:"p99_ms,omitempty"`
}

// stormLoad sends Syncs from users' phones, workers at a time, each user in
// turn, each request on a new TLS connection (resumed: a phone that wakes
// up); every answer must name the phone's own user.
func stormLoad(args []string) {
	fs := flag.NewFlagSet("stormload", flag.ExitOnError)
	base := fs.String("url", "", "gateway URL")
	dir := fs.String("dir", "", "files")
	users := fs.Int("users", 1000, "users")
	workers := fs.Int("workers", 32, "requests in flight")
	d := fs.Duration("duration", time.Minute, "how long")
	rate := fs.Float64("rate", 0, "requests per second in all (0: as fast as the workers go)")
	fs.Parse(args)
	u, err := url.Parse(*base)
	if err != nil {
		log.Fatal(err)
	}
	roots := pool(*dir)
	confs := make([]*tls.Config, *users)
	for i := range confs {
		name := userName(i)
		cert, err := tls.LoadX509KeyPair(filepath.Join(*dir, "users", name+".crt"), filepath.Join(*dir, "users", name+".key"))
		if err != nil {
			log.Fatal(err)
		}
		confs[i] = &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert},
			ClientSessionCache: tls.NewLRUClientSessionCache(1)}
	}
	var next, requests, ok, notMine atomic.Int64
	var mu sync.Mutex
	errs := map[string]int64{}
	var lat []time.Duration
	fail := func(kind string) {
		mu.Lock()
		errs[kind]++
		mu.Unlock()
	}
	var tick <-chan time.Time
	if *rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / *rate))
		defer t.Stop()
		tick = t.C
	}
	stop := time.Now().Add(*d)
	var wg sync.WaitGroup
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(stop) {
				if tick != nil {
					<-tick
				}
				i := int(next.Add(1)-1) % *users
				user := userName(i)
				requests.Add(1)
				t0 := time.Now()
				got, kind := syncOnce(u.Host, confs[i], cmdURL(*base, "Sync", user))
				switch {
				case kind != "":
					fail(kind)
				case got != user:
					notMine.Add(1)
				default:
					ok.Add(1)
					mine = append(mine, time.Since(t0))
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	r := stormResult{Requests: requests.Load(), OK: ok.Load(), Errors: errs, NotMine: notMine.Load()}
	r.P50, r.P99 = percentiles(lat)
	json.NewEncoder(os.Stdout).Encode(r)
}

// syncOnce sends one request on a connection of its own and returns the
// user the answer names, or the kind of failure.
func syncOnce(host string, conf *tls.Config, target string) (user, kind string) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", host, conf)
	if err != nil {
		return "", "connect: " + errKind(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	req, _ := http.NewRequest(http.MethodPost, target, nil)
	req.Header.Set("Content-Type", "application/vnd.ms-sync.wbxml")
	req.Close = true
	if err := req.Write(c); err != nil {
		return "", "write: " + errKind(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return "", "read: " + errKind(err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if err != nil {
		return "", "read body: " + errKind(err)
	}
	if resp.StatusCode != 200 {
		return "", "status " + strconv.Itoa(resp.StatusCode)
	}
	return strings.TrimSpace(string(body)), ""
}

// errKind is an error without the addresses and ports that make each one
// unique.
func errKind(err error) string {
	var op *net.OpError
	if ok := asOpError(err, &op); ok && op.Err != nil {
		return op.Op + ": " + op.Err.Error()
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

func asOpError(err error, op **net.OpError) bool {
	for err != nil {
		if o, ok := err.(*net.OpError); ok {
			*op = o
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// storm runs the refresh storm and writes its report.
func storm(args []string) error {
	fs := flag.NewFlagSet("storm", flag.ExitOnError)
	out := fs.String("out", "bench/results/storm.md", "where to write the results")
	users := fs.Int("users", 10000, "users, all warm")
	lifetime := fs.Duration("lifetime", 5*time.Minute, "ticket lifetime the gateway asks for")
	lifetimes := fs.Int("lifetimes", 3, "lifetimes of traffic after the warm-up")
	workers := fs.Int("workers", 32, "requests in flight")
	fs.Parse(args)
	if _, err := raiseFiles(); err != nil {
		log.Printf("bench: open-file limit: %v", err)
	}
	ctx := context.Background()
	t0 := time.Now()
	b, err := setUp(ctx, names(*users), 0)
	if err != nil {
		return err
	}
	defer b.close()
	made := time.Since(t0)
	if err := b.writeKrb5(*lifetime); err != nil {
		return err
	}
	if err := b.writeASAKeytab(ctx); err != nil {
		return err
	}
	backendAddr := freeAddr()
	stopBackend, _, err := b.child("verify", "-addr", backendAddr, "-dir", b.dir)
	if err != nil {
		return err
	}
	defer stopBackend()
	adminAddr := freeAddr()
	gw, err := b.startGateway("https://"+backendAddr, map[string]any{"admin": map[string]any{"listen": adminAddr}})
	if err != nil {
		return err
	}
	defer gw.stop()
	b.printf("# Ticket refresh storm (%s)\n\n", time.Now().UTC().Format("2006-01-02"))
	b.printf("`go run ./bench/gateway storm -users %d -lifetime %v -lifetimes %d -workers %d`: %d cores; lab Samba 4 KDC on loopback; %d users made in %v. "+
		"The gateway (examples/gateway) asks for %v tickets (krb5.conf `ticket_lifetime`; its service TGT too); the backend accepts a ticket only before its end by its own clock, and only for the user the request names.\n\n",
		*users, *lifetime, *lifetimes, *workers, numCPU(), *users, made.Round(time.Second), *lifetime)

	// Warm-up: every user's first request.
	c0 := b.relay.Counts()
	t1 := time.Now()
	failed := fire(*users, 100, func(i int) (string, *http.Client) { u := userName(i); return u, device(b.dir, u) }, gw.url, false)
	warm := time.Since(t1)
	c1 := b.relay.Counts()
	b.printf("Warm-up: %d first requests, 100 at a time, in %v (%d failed); KDC: %d AS, %d S4U2Self (the account's name, then the evidence), %d S4U2Proxy.\n\n",
		*users, warm.Round(time.Second), failed, c1.AS-c0.AS, c1.S4U2Self-c0.S4U2Self, c1.S4U2Proxy-c0.S4U2Proxy)

	// The storm: traffic through several lifetimes, sampled each second.
	d := time.Duration(*lifetimes) * *lifetime
	type sample struct {
		at                time.Duration
		exch, as          int
		rss               int64
		goroutines        float64
		cacheMisses, hits int64
		waiting           int
	}
	var samples []sample
	peak, peakAt := 0, time.Duration(0)
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		last := b.relay.Counts()
		start := time.Now()
		window := []int{}
		for i := 1; ; i++ {
			select {
			case <-done:
				return
			case <-t.C:
			}
			c := b.relay.Counts()
			n := c.S4U2Self + c.S4U2Proxy - last.S4U2Self - last.S4U2Proxy
			last = c
			window = append(window, n)
			if len(window) > 5 {
				window = window[1:]
			}
			sum := 0
			for _, w := range window {
				sum += w
			}
			if len(window) == 5 && sum/5 > peak {
				peak, peakAt = sum/5, time.Since(start).Round(time.Second)
			}
			if i%30 == 0 {
				s := sample{at: time.Since(start).Round(time.Second), exch: c.S4U2Self + c.S4U2Proxy - c1.S4U2Self - c1.S4U2Proxy,
					as: c.AS - c1.AS, rss: rss(gw.cmd.Process.Pid), goroutines: metric(adminAddr, "go_goroutines")}
				var st kerberos.CacheStats
				b.getJSON("http://"+adminAddr+"/v1/tickets", &st)
				s.cacheMisses, s.hits, s.waiting = st.Misses, st.Hits, st.RefreshesWaiting
				samples = append(samples, s)
				log.Printf("storm: %v: %d exchanges, %d AS, RSS %d KiB, %.0f goroutines", s.at, s.exch, s.as, s.rss, s.goroutines)
			}
		}
	}()
	var before kerberos.CacheStats
	b.getJSON("http://"+adminAddr+"/v1/tickets", &before)
	tcp0 := tcpCounters()
	p0 := cpuTime(gw.cmd.Process.Pid)
	outb, err := b.command("stormload", "-url", gw.url, "-dir", b.dir, "-users", strconv.Itoa(*users), "-workers", strconv.Itoa(*workers),
		"-duration", d.String()).Output()
	close(done)
	<-sampled
	if err != nil {
		return fmt.Errorf("stormload: %v", err)
	}
	p1 := cpuTime(gw.cmd.Process.Pid)
	var res stormResult
	if err := json.Unmarshal(outb, &res); err != nil {
		return err
	}
	c2, tcp1 := b.relay.Counts(), tcpCounters()
	var after kerberos.CacheStats
	b.getJSON("http://"+adminAddr+"/v1/tickets", &after)
	var vs stormStats
	if err := b.getJSON("https://"+backendAddr+"/stats", &vs); err != nil {
		return err
	}

	self, proxy := c2.S4U2Self-c1.S4U2Self, c2.S4U2Proxy-c1.S4U2Proxy
	perUserLife := float64(self+proxy) / float64(*users) / float64(*lifetimes)
	b.printf("## %v of traffic (%d lifetimes of %v), %d users, %d requests in flight\n\n", d, *lifetimes, *lifetime, *users, *workers)
	b.printf("| what | figure |\n|---|---|\n")
	b.printf("| requests sent by the phones | %d (%.0f/s; every user about every %.1f s) |\n", res.Requests, float64(res.Requests)/d.Seconds(),
		float64(*users)/(float64(res.Requests)/d.Seconds()))
	b.printf("| answered 200 with the phone's own user | %d |\n", res.OK)
	b.printf("| answered with another user (phone's check) | %d |\n", res.NotMine)
	b.printf("| failed, by kind | %s |\n", kinds(res.Errors))
	b.printf("| p50 / p99 latency (new TLS connection, resumed) | %.2f ms / %.2f ms |\n", res.P50, res.P99)
	b.printf("| backend: served with a valid ticket of the named user | %d |\n", vs.Served)
	b.printf("| backend: **no ticket / refused / past its end / another user's** | **%d / %d / %d / %d** |\n", vs.NoTicket, vs.Invalid, vs.Expired, vs.WrongUser)
	b.printf("| backend: least life left on a ticket it was sent | %s (tickets lived at most %s) |\n", vs.LeastLeft, vs.TicketLife)
	b.printf("| KDC: S4U2Self + S4U2Proxy during the traffic | %d + %d (%.2f per user per lifetime; %.2f exchanges per new ticket) |\n",
		self, proxy, perUserLife, float64(self+proxy)/float64(max(proxy, 1)))
	b.printf("| KDC: AS requests (the service TGT renewed under load; 2 per login, the first draws PREAUTH_REQUIRED) | %d |\n", c2.AS-c1.AS)
	b.printf("| KDC: requests sent again after a timeout | %d |\n", c2.Resent-c1.Resent)
	b.printf("| ticket cache: hits / requests that waited for the KDC / background refreshes / failed exchanges | %d / %d / %d / %d |\n",
		after.Hits-before.Hits, after.Misses-before.Misses, after.Refreshes-before.Refreshes, after.Errors-before.Errors)
	b.printf("| ticket cache: failed refreshes / refreshes dropped late (their ticket reached its margin while waiting for one of the 8 slots) | %d / %d |\n",
		after.RefreshErrors-before.RefreshErrors, after.RefreshesLate-before.RefreshesLate)
	b.printf("| peak KDC exchanges per second (5 s average) | %d, %v into the traffic |\n", peak, peakAt)
	b.printf("| mean KDC exchanges per second | %.1f |\n", float64(self+proxy)/d.Seconds())
	b.printf("| gateway CPU per request | %.0f µs |\n", float64(p1-p0)/float64(max(res.Requests, 1)))
	b.printf("| gateway log, errors by kind | %s |\n", kinds(b.logErrors()))
	b.printf("| TCP on this host during the traffic: SYNs sent again / listen queue overflows | %d / %d |\n\n",
		tcp1["TCPSynRetrans"]-tcp0["TCPSynRetrans"], tcp1["ListenOverflows"]-tcp0["ListenOverflows"])
	b.printf("Gateway, every 30 s of the traffic:\n\n| at | S4U exchanges so far | AS so far | refreshes waiting | RSS | goroutines |\n|---|---|---|---|---|---|\n")
	for _, s := range samples {
		b.printf("| %v | %d | %d | %d | %.1f MiB | %.0f |\n", s.at, s.exch, s.as, s.waiting, float64(s.rss)/1024, s.goroutines)
	}
	b.printf("\n")

	// The KDC's capacity, for scale: S4U2Self + S4U2Proxy for distinct
	// users, 16 at a time, straight to the KDC, with the gateway stopped
	// (its refreshes would otherwise share the KDC with the measurement).
	gw.stop()
	capacity, err := b.kdcCapacity(ctx, *users, 16, 15*time.Second)
	if err != nil {
		return err
	}
	b.printf("The lab KDC's capacity, measured after the storm with the gateway stopped (S4U2Self + S4U2Proxy for distinct users, 16 at a time, 15 s, on the same cores): %.0f exchanges/s. "+
		"The storm's peak was %.0f%% of it.\n", capacity, 100*float64(peak)/capacity)
	return os.WriteFile(*out, []byte(b.report.String()), 0o644)
}

// kdcCapacity is how many exchanges per second the lab KDC answers.
func (b *bench) kdcCapacity(ctx context.Context, users, conc int, d time.Duration) (float64, error) {
	cfg, err := kerberos.NewConfig(b.lab.Realm, b.lab.KDCAddr())
	if err != nil {
		return 0, err
	}
	c := kerberos.NewWithPassword("svc_awseg", b.lab.Realm, svcPassword, cfg)
	if _, err := c.TGT(ctx); err != nil {
		return 0, err
	}
	var n, errs atomic.Int64
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	var next atomic.Int64
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				u := userName(int(next.Add(1)) % users)
				if _, err := c.Impersonate(ctx, u, b.spn); err != nil {
					errs.Add(1)
					continue
				}
				n.Add(2)
			}
		}()
	}
	wg.Wait()
	if errs.Load() > 0 {
		log.Printf("bench: %d failed exchanges while measuring the KDC", errs.Load())
	}
	return float64(n.Load()) / d.Seconds(), nil
}

func kinds(m map[string]int64) string {
	if len(m) == 0 {
		return "0"
	}
	var s []string
	for k, v := range m {
		s = append(s, fmt.Sprintf("%s: %d", k, v))
	}
	sort.Strings(s)
	return strings.Join(s, "; ")
}

// logErrors counts the gateway log's errors by kind: its "error" fields
// with user names, numbers and addresses taken out.
func (b *bench) logErrors() map[string]int64 {
	f, err := os.Open(filepath.Join(b.dir, "gateway.log"))
	if err != nil {
		return nil
	}
	defer f.Close()
	kinds := map[string]int64{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil || line.Error == "" {
			continue
		}
		kinds[strings.ReplaceAll(logNoise.ReplaceAllString(line.Error, "#"), "|", "/")]++
	}
	return kinds
}

// logNoise is what makes one error line differ from another of its kind.
var logNoise = regexp.MustCompile(`bu[0-9]+(@[a-z.]+)?|\[KDC [^]]*\]|[0-9]+(\.[0-9]+)*(:[0-9]+)?`)

// getJSON reads a JSON answer from one of the bench's listeners (https
// ones have the bench CA's certificate).
func (b *bench) getJSON(u string, v any) error {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool(b.dir)}}}
	resp, err := c.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// metric reads one unlabelled value from the gateway's /metrics.
func metric(admin, name string) float64 {
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + admin + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	return 0
}
