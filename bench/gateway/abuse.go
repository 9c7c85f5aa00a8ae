package main

// The front door under attack (issue 27): the built gateway, the lab KDC,
// loopback only, each attack bounded in time. A "legit" child measures what
// real users see meanwhile (warm requests, first logins with certificates,
// first logins with Basic); an "attack" child applies one attack. The
// driver samples the gateway's memory, goroutines and descriptors, counts
// KDC requests at the relay, and writes one row per attack: held or not
// held, with the figures.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/segkcd/segkcd/internal/testinfra/lab"
)

// strangerCerts is how many certificates the trusted CA issues to UPNs no
// account holds (makeFiles).
const strangerCerts = 200

// stats is one kind of legitimate request during an attack.
type stats struct {
	N      int            `json:"n"`
	Errors map[string]int `json:"errors"`
	P50    float64        `json:"p50_ms"`
	P99    float64        `json:"p99_ms"`
}

func (s stats) failed() int {
	n := 0
	for _, v := range s.Errors {
		n += v
	}
	return n
}

func (s stats) String() string {
	e := "0 errors"
	if f := s.failed(); f > 0 {
		e = fmt.Sprintf("%d errors (%s)", f, kindsInt(s.Errors))
	}
	return fmt.Sprintf("p99 %.0f ms, %s of %d", s.P99, e, s.N)
}

func kindsInt(m map[string]int) string {
	c := map[string]int64{}
	for k, v := range m {
		c[k] = int64(v)
	}
	return kinds(c)
}

type legitResult struct {
	Warm, Cold, BasicCold stats
}

// recorder collects latencies and errors of one kind.
type recorder struct {
	mu   sync.Mutex
	lat  []time.Duration
	errs map[string]int
}

func (r *recorder) add(d time.Duration, resp *http.Response, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.errs == nil {
		r.errs = map[string]int{}
	}
	switch {
	case err != nil:
		r.errs[errKind(err)]++
	case resp.StatusCode != 200:
		r.errs[strconv.Itoa(resp.StatusCode)]++
	default:
		r.lat = append(r.lat, d)
	}
}

func (r *recorder) stats() stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := stats{Errors: r.errs}
	s.N = len(r.lat) + s.failed()
	s.P50, s.P99 = percentiles(r.lat)
	return s
}

// legit is what real users do during an attack: warm devices at a steady
// rate (open loop), and users signing in for the first time, with a
// certificate and with Basic, each timed from its start.
func legit(args []string) {
	fs := flag.NewFlagSet("legit", flag.ExitOnError)
	base := fs.String("url", "", "gateway URL")
	dir := fs.String("dir", "", "files")
	warm := fs.String("warm", "0:50", "warm users [from:to)")
	cold := fs.String("cold", "", "users never seen, signing in with certificates [from:to)")
	basic := fs.String("basic", "", "users never seen, signing in with Basic [from:to)")
	password := fs.String("password", lab.UserPassword, "the users' password")
	d := fs.Duration("duration", 20*time.Second, "how long")
	warmRate := fs.Float64("warm-rate", 50, "warm requests per second")
	fs.Parse(args)
	span := func(s string) (int, int) {
		a, b, _ := strings.Cut(s, ":")
		x, _ := strconv.Atoi(a)
		y, _ := strconv.Atoi(b)
		return x, y
	}
	stop := time.Now().Add(*d)
	var res legitResult
	var wg sync.WaitGroup
	// Warm: one keep-alive device per user, requests due at warmRate.
	wf, wt := span(*warm)
	due := make(chan time.Time, 1<<16)
	go func() {
		defer close(due)
		interval := time.Duration(float64(time.Second) / *warmRate)
		for t := time.Now(); t.Before(stop); t = t.Add(interval) {
			time.Sleep(time.Until(t))
			due <- t
		}
	}()
	var warmRec, coldRec, basicRec recorder
	for u := wf; u < wt; u++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := device(*dir, userName(u))
			c.Timeout = 30 * time.Second
			for t0 := range due {
				resp, err := c.Post(easURL(*base, userName(u)), "application/vnd.ms-sync.wbxml", nil)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				warmRec.add(time.Since(t0), resp, err)
			}
		}()
	}
	// First logins, spread over the run.
	first := func(from, to int, rec *recorder, client func(u string) (*http.Client, func(*http.Request))) {
		defer wg.Done()
		n := to - from
		if n <= 0 {
			return
		}
		interval := *d / time.Duration(n)
		var inner sync.WaitGroup
		for i := 0; i < n; i++ {
			time.Sleep(time.Until(stop.Add(-*d).Add(time.Duration(i) * interval)))
			inner.Add(1)
			go func(u string) {
				defer inner.Done()
				c, prep := client(u)
				c.Timeout = 30 * time.Second
				req, _ := http.NewRequest(http.MethodPost, easURL(*base, u), nil)
				prep(req)
				t0 := time.Now()
				resp, err := c.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				rec.add(time.Since(t0), resp, err)
			}(userName(from + i))
		}
		inner.Wait()
	}
	cf, ct := span(*cold)
	bf, bt := span(*basic)
	wg.Add(2)
	go first(cf, ct, &coldRec, func(u string) (*http.Client, func(*http.Request)) { return device(*dir, u), func(*http.Request) {} })
	go first(bf, bt, &basicRec, func(u string) (*http.Client, func(*http.Request)) {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool(*dir)}}},
			func(r *http.Request) { r.SetBasicAuth(u, *password) }
	})
	wg.Wait()
	res.Warm, res.Cold, res.BasicCold = warmRec.stats(), coldRec.stats(), basicRec.stats()
	json.NewEncoder(os.Stdout).Encode(res)
}

// attackResult is what an attack child did.
type attackResult struct {
	Requests int64            `json:"requests"` // requests (or connections) sent
	Statuses map[string]int64 `json:"statuses"` // answers by status, or failures by kind
	Longest  float64          `json:"longest_s"`
	Note     string           `json:"note,omitempty"`
}

// attacker addresses: worker i dials from its own loopback address, as a
// botnet would (each has its own failed-login allowance).
func attackerDialer(i int) *net.Dialer {
	return &net.Dialer{Timeout: 10 * time.Second,
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 1, byte(i/250), byte(i%250+1))}}
}

// attack applies one kind of attack for a duration and prints an
// attackResult.
func attack(args []string) {
	fs := flag.NewFlagSet("attack", flag.ExitOnError)
	kind := fs.String("kind", "", "basic-random, cert-unknown, slowloris-headers, slowloris-body, slowloris-tls, header-flood, conn-flood, pipelined-garbage")
	base := fs.String("url", "", "gateway URL")
	dir := fs.String("dir", "", "files")
	d := fs.Duration("duration", 20*time.Second, "how long")
	workers := fs.Int("workers", 800, "workers (connections for the floods)")
	fs.Parse(args)
	raiseFiles()
	addr := strings.TrimPrefix(*base, "https://")
	stop := time.Now().Add(*d)
	var requests atomic.Int64
	var mu sync.Mutex
	statuses := map[string]int64{}
	longest := time.Duration(0)
	count := func(k string) {
		mu.Lock()
		statuses[k]++
		mu.Unlock()
	}
	lived := func(t time.Duration) {
		mu.Lock()
		longest = max(longest, t)
		mu.Unlock()
	}
	tlsConf := &tls.Config{RootCAs: pool(*dir)}
	dialTLS := func(i int, conf *tls.Config) (*tls.Conn, error) {
		return tls.DialWithDialer(attackerDialer(i), "tcp", addr, conf)
	}
	// connect opens the next connection of a flood, counted; nil when the
	// dial failed (counted by its error, after a pause).
	connect := func(i int) *tls.Conn {
		requests.Add(1)
		c, err := dialTLS(i, tlsConf)
		if err != nil {
			count(errKind(err))
			time.Sleep(100 * time.Millisecond)
			return nil
		}
		return c
	}
	status := func(c net.Conn, br *bufio.Reader) {
		c.SetReadDeadline(time.Now().Add(40 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			count(errKind(err))
			return
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		count(strconv.Itoa(resp.StatusCode))
	}
	// send sends one request of a flood and counts its answer.
	send := func(c *http.Client, req *http.Request) {
		requests.Add(1)
		resp, err := c.Do(req)
		if err != nil {
			count(errKind(err))
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		count(strconv.Itoa(resp.StatusCode))
	}
	var wg sync.WaitGroup
	run := func(n int, f func(i int)) {
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); f(i) }()
		}
	}
	note := ""
	switch *kind {
	case "basic-random":
		note = "each worker its own source address"
		run(*workers, func(i int) {
			tr := &http.Transport{TLSClientConfig: tlsConf, DialContext: attackerDialer(i).DialContext, MaxIdleConnsPerHost: 1}
			c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			for time.Now().Before(stop) {
				name := fmt.Sprintf("r%016x", rand.Uint64())
				req, _ := http.NewRequest(http.MethodPost, easURL(*base, name), nil)
				req.SetBasicAuth(name, "guess")
				send(c, req)
			}
		})
	case "cert-unknown":
		note = fmt.Sprintf("%d certificates of the trusted CA, UPNs no account holds", strangerCerts)
		run(*workers, func(i int) {
			cert, err := tls.LoadX509KeyPair(filepath.Join(*dir, "strangers", fmt.Sprintf("s%03d.crt", i%strangerCerts)),
				filepath.Join(*dir, "strangers", fmt.Sprintf("s%03d.key", i%strangerCerts)))
			if err != nil {
				log.Fatal(err)
			}
			conf := &tls.Config{RootCAs: pool(*dir), Certificates: []tls.Certificate{cert}}
			tr := &http.Transport{TLSClientConfig: conf, DialContext: attackerDialer(i).DialContext, MaxIdleConnsPerHost: 1}
			c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			for time.Now().Before(stop) {
				req, _ := http.NewRequest(http.MethodPost, easURL(*base, fmt.Sprintf("stranger%03d", i%strangerCerts)), nil)
				send(c, req)
			}
		})
	case "slowloris-headers", "slowloris-body", "slowloris-tls":
		note = "one byte a second on each connection; a connection the gateway closes is opened again"
		run(*workers, func(i int) {
			for time.Now().Before(stop) {
				t0 := time.Now()
				var c net.Conn
				var err error
				requests.Add(1)
				switch *kind {
				case "slowloris-tls":
					// A handshake record header announcing 512 bytes,
					// then the bytes one at a time.
					c, err = attackerDialer(i).Dial("tcp", addr)
					if err == nil {
						_, err = c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00})
					}
				case "slowloris-headers":
					c, err = dialTLS(i, tlsConf)
					if err == nil {
						_, err = io.WriteString(c, "POST /Microsoft-Server-ActiveSync?Cmd=Ping HTTP/1.1\r\nHost: gw\r\n")
					}
				default:
					c, err = dialTLS(i, tlsConf)
					if err == nil {
						_, err = io.WriteString(c, "POST /Microsoft-Server-ActiveSync?Cmd=Sync&User=x&DeviceId=D&DeviceType=T HTTP/1.1\r\n"+
							"Host: gw\r\nContent-Length: 10000000\r\n\r\n")
					}
				}
				if err != nil {
					count(errKind(err))
					time.Sleep(100 * time.Millisecond)
					continue
				}
				for time.Now().Before(stop) {
					time.Sleep(time.Second)
					b := []byte("x")
					if *kind == "slowloris-headers" {
						b = []byte("X-Slow: y\r\n")[:1+rand.IntN(3)]
					}
					if _, err = c.Write(b); err != nil {
						break
					}
				}
				lived(time.Since(t0))
				if err != nil {
					count("closed by the gateway")
				} else {
					count("held to the end")
				}
				c.Close()
			}
		})
	case "header-flood":
		note = "in turn: 5,000 headers, one 1 MiB header, obs-fold continuation lines, bare LF line ends"
		many := strings.Builder{}
		for j := 0; j < 5000; j++ {
			fmt.Fprintf(&many, "X-H%d: v\r\n", j)
		}
		reqs := []string{
			"POST /Microsoft-Server-ActiveSync?Cmd=Sync HTTP/1.1\r\nHost: gw\r\n" + many.String() + "\r\n",
			"POST /Microsoft-Server-ActiveSync?Cmd=Sync HTTP/1.1\r\nHost: gw\r\nX-Big: " + strings.Repeat("a", 1<<20) + "\r\n\r\n",
			"POST /Microsoft-Server-ActiveSync?Cmd=Sync HTTP/1.1\r\nHost: gw\r\nX-Fold: a\r\n  b\r\n\tc\r\nContent-Length: 0\r\n\r\n",
			"POST /Microsoft-Server-ActiveSync?Cmd=Sync HTTP/1.1\nHost: gw\nContent-Length: 0\n\n",
		}
		run(*workers, func(i int) {
			for j := 0; time.Now().Before(stop); j++ {
				c := connect(i)
				if c == nil {
					continue
				}
				go io.WriteString(c, reqs[j%len(reqs)]) // the gateway may answer before it has read it all
				status(c, bufio.NewReader(c))
				c.Close()
			}
		})
	case "conn-flood":
		note = "TCP connections that send nothing, from many source addresses, kept open (opened again when closed)"
		run(*workers, func(i int) {
			for time.Now().Before(stop) {
				t0 := time.Now()
				requests.Add(1)
				c, err := attackerDialer(i).Dial("tcp", addr)
				if err != nil {
					count(errKind(err))
					time.Sleep(200 * time.Millisecond)
					continue
				}
				c.SetReadDeadline(stop)
				_, err = c.Read(make([]byte, 1))
				lived(time.Since(t0))
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					count("held to the end")
				} else {
					count("closed by the gateway")
				}
				c.Close()
			}
		})
	case "pipelined-garbage":
		note = "per connection: 100 pipelined requests without credentials, then binary garbage"
		garbage := strings.Repeat("GET /Microsoft-Server-ActiveSync?Cmd=Options HTTP/1.1\r\nHost: gw\r\n\r\n", 100) +
			strings.Repeat("\x00\xff\x16\x03 NOT HTTP\r\n", 1000)
		run(*workers, func(i int) {
			for time.Now().Before(stop) {
				c := connect(i)
				if c == nil {
					continue
				}
				go io.WriteString(c, garbage)
				br := bufio.NewReader(c)
				answers := 0
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				for {
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						break
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					answers++
				}
				if answers > 5 {
					answers = answers / 25 * 25 // buckets past a few
				}
				count(fmt.Sprintf("%d answers", answers))
				c.Close()
			}
		})
	default:
		log.Fatalf("attack: unknown kind %q", *kind)
	}
	wg.Wait()
	json.NewEncoder(os.Stdout).Encode(attackResult{Requests: requests.Load(), Statuses: statuses, Longest: longest.Seconds(), Note: note})
}

// gatewayState is what the driver samples of the gateway process.
type gatewayState struct {
	rss        int64 // KiB
	goroutines float64
	fds        int
}

func (b *bench) state(pid int, admin string) gatewayState {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return gatewayState{rss: rss(pid), goroutines: metric(admin, "go_goroutines"), fds: len(ents)}
}

// abuse runs every attack against the gateway in turn, with the legit
// users' traffic beside each, and writes the table.
func abuse(args []string) error {
	fs := flag.NewFlagSet("abuse", flag.ExitOnError)
	out := fs.String("out", "bench/results/abuse.md", "where to write the results")
	d := fs.Duration("duration", 20*time.Second, "each attack")
	workers := fs.Int("workers", 800, "attack workers")
	floodConns := fs.Int("flood-conns", 20000, "connections of the connection flood")
	only := fs.String("only", "", "run these attacks only (comma-separated)")
	fs.Parse(args)
	if _, err := raiseFiles(); err != nil {
		log.Printf("bench: open-file limit: %v", err)
	}
	attacks := []string{"basic-random", "cert-unknown", "slowloris-headers", "slowloris-body", "slowloris-tls",
		"header-flood", "conn-flood", "pipelined-garbage"}
	if *only != "" {
		attacks = strings.Split(*only, ",")
	}
	const warm, coldPer, basicPer = 50, 40, 20
	perRun := coldPer + basicPer
	total := warm + perRun*(len(attacks)+1)
	ctx := context.Background()
	b, err := setUp(ctx, names(total), 0)
	if err != nil {
		return err
	}
	defer b.close()
	backendAddr := freeAddr()
	stopBackend, _, err := b.child("backend", "-addr", backendAddr, "-dir", b.dir)
	if err != nil {
		return err
	}
	defer stopBackend()
	adminAddr := freeAddr()
	gw, err := b.startGateway("https://"+backendAddr, map[string]any{"basic": true, "admin": map[string]any{"listen": adminAddr}})
	if err != nil {
		return err
	}
	defer gw.stop()
	pid := gw.cmd.Process.Pid
	if f := fire(warm, 25, func(i int) (string, *http.Client) { u := userName(i); return u, device(b.dir, u) }, gw.url, false); f > 0 {
		return fmt.Errorf("warm-up: %d of %d first requests failed", f, warm)
	}
	var limit string
	if l, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid)); err == nil {
		for _, line := range strings.Split(string(l), "\n") {
			if strings.HasPrefix(line, "Max open files") {
				limit = strings.Join(strings.Fields(line)[3:5], "/")
			}
		}
	}
	b.printf("# The front door under attack (%s)\n\n", time.Now().UTC().Format("2006-01-02"))
	b.printf("`go run ./bench/gateway abuse -duration %v -workers %d` (run by `make bench`): %d cores, everything on loopback; the gateway is examples/gateway "+
		"(certificates and Basic, its defaults otherwise; open files soft/hard %s) in front of a TLS stand-in for Exchange, with the lab's Samba KDC. "+
		"During each attack, real users: %d warm devices at 50 requests/s (open loop), %d first logins with certificates and %d with Basic, spread over the attack. "+
		"The attacker runs under `nice -n 10`: in a real attack its CPU is not the gateway's, here both share the cores. KDC requests are counted on the wire (a relay before the KDC). *Held* means: no error for real users, their p99 within 2× of the run without attack "+
		"or within 50 ms (warm) and 250 ms (first logins), whichever is larger, and goroutines and descriptors back within 25 of where they were, within 90 s of the attack's end.\n\n",
		*d, *workers, numCPU(), limit, warm, coldPer, basicPer)

	next := warm
	legitRun := func() (legitResult, error) {
		c0, c1 := next, next+coldPer
		b0, b1 := c1, c1+basicPer
		next = b1
		outb, err := b.command("legit", "-url", gw.url, "-dir", b.dir, "-warm", fmt.Sprintf("0:%d", warm),
			"-cold", fmt.Sprintf("%d:%d", c0, c1), "-basic", fmt.Sprintf("%d:%d", b0, b1), "-duration", d.String()).Output()
		var r legitResult
		if err != nil {
			return r, fmt.Errorf("legit: %v", err)
		}
		return r, json.Unmarshal(outb, &r)
	}
	base0 := b.relay.Counts()
	baseState := b.state(pid, adminAddr)
	baseline, err := legitRun()
	if err != nil {
		return err
	}
	baseKDC := b.relay.Counts()
	legitKDC := (baseKDC.AS + baseKDC.S4U2Self + baseKDC.S4U2Proxy) - (base0.AS + base0.S4U2Self + base0.S4U2Proxy)
	b.printf("Without attack: warm %s; first logins, certificate %s; Basic %s. KDC requests: %d (%.1f per first login). "+
		"Gateway: %.1f MiB, %.0f goroutines, %d descriptors.\n\n",
		baseline.Warm, baseline.Cold, baseline.BasicCold, legitKDC, float64(legitKDC)/float64(coldPer+basicPer),
		float64(baseState.rss)/1024, baseState.goroutines, baseState.fds)
	b.printf("| attack | held? | attack requests (answers) | KDC requests per attack request | real users: warm | first logins: certificate | first logins: Basic | gateway peak: RSS, goroutines, descriptors | back after the attack |\n")
	b.printf("|---|---|---|---|---|---|---|---|---|\n")
	perLogin := float64(legitKDC) / float64(coldPer+basicPer)
	for _, kind := range attacks {
		log.Printf("abuse: %s", kind)
		before := b.state(pid, adminAddr)
		k0 := b.relay.Counts()
		peak := before
		done := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			t := time.NewTicker(500 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
				}
				s := b.state(pid, adminAddr)
				peak.rss, peak.goroutines, peak.fds = max(peak.rss, s.rss), max(peak.goroutines, s.goroutines), max(peak.fds, s.fds)
			}
		}()
		w := *workers
		if kind == "conn-flood" {
			w = *floodConns
		}
		// The attacker is niced: in a real attack its CPU is not the
		// gateway's; here they share two cores, and the gateway and the
		// KDC go first.
		atk := exec.Command("nice", "-n", "10", b.self, "attack", "-kind", kind, "-url", gw.url, "-dir", b.dir, "-duration", d.String(),
			"-workers", strconv.Itoa(w))
		atk.Stderr = os.Stderr
		atk.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		var atkOut strings.Builder
		atk.Stdout = &atkOut
		if err := atk.Start(); err != nil {
			return err
		}
		time.Sleep(2 * time.Second) // the attack in full swing
		lr, lerr := legitRun()
		atkErr := atk.Wait()
		close(done)
		<-sampled
		if lerr != nil {
			return lerr
		}
		if atkErr != nil {
			return fmt.Errorf("attack %s: %v", kind, atkErr)
		}
		var ar attackResult
		if err := json.Unmarshal([]byte(atkOut.String()), &ar); err != nil {
			return fmt.Errorf("attack %s: %v: %q", kind, err, atkOut.String())
		}
		k1 := b.relay.Counts()
		kdc := float64((k1.AS+k1.S4U2Self+k1.S4U2Proxy)-(k0.AS+k0.S4U2Self+k0.S4U2Proxy)) - perLogin*float64(lr.Cold.N+lr.BasicCold.N)
		// Back: goroutines and descriptors within 25 of before.
		t0 := time.Now()
		back := "not within 90 s"
		var after gatewayState
		for time.Since(t0) < 90*time.Second {
			after = b.state(pid, adminAddr)
			// Each real user's first login may leave an idle connection
			// to Exchange (UserPools.IdleTimeout, 90 s): not the attack's.
			if after.goroutines <= before.goroutines+25 && after.fds <= before.fds+perRun+25 {
				back = fmt.Sprintf("in %v (%.1f MiB, %.0f goroutines, %d descriptors)", time.Since(t0).Round(time.Second),
					float64(after.rss)/1024, after.goroutines, after.fds)
				break
			}
			time.Sleep(time.Second)
		}
		within := func(s, base stats, floor float64) bool {
			return s.failed() == 0 && s.P99 <= max(2*base.P99, floor)
		}
		held := within(lr.Warm, baseline.Warm, 50) && within(lr.Cold, baseline.Cold, 250) && within(lr.BasicCold, baseline.BasicCold, 250) &&
			!strings.HasPrefix(back, "not")
		verdict := "**held**"
		if !held {
			verdict = "**not held**"
		}
		answers := map[string]int64{}
		for k, v := range ar.Statuses {
			answers[k] = v
		}
		b.printf("| %s (%s) | %s | %d (%s)%s | %.4f | %s | %s | %s | %.1f MiB, %.0f, %d | %s |\n",
			kind, ar.Note, verdict, ar.Requests, kinds(answers), longestNote(ar.Longest), max(kdc, 0)/float64(max(ar.Requests, 1)),
			lr.Warm, lr.Cold, lr.BasicCold, float64(peak.rss)/1024, peak.goroutines, peak.fds, back)
	}
	b.printf("\nThe gateway's log, errors by kind over the whole run: %s.\n", kinds(b.logErrors()))
	return os.WriteFile(*out, []byte(b.report.String()), 0o644)
}

func longestNote(s float64) string {
	if s == 0 {
		return ""
	}
	return fmt.Sprintf("; longest connection %.0f s", s)
}
