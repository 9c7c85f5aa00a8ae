package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/segkcd/segkcd/internal/testinfra/eastest"
	"github.com/segkcd/segkcd/kerberos"
)

// The soak: phones on keep-alive connections sending a mix of ActiveSync
// commands through the gateway (examples/gateway) to the Exchange stand-in
// (eastest, which accepts the tickets with the ASA's keys and answers with
// the user it authenticated) for a long while, with connections dropped at
// random, one KDC restart and one stand-in restart in the middle. Every
// answer is checked against the phone's own user.
//
//	go run ./bench/gateway soak [-phones 2000 -users 500 -duration 20m]

// easRole runs the stand-in on a fixed address (so it can be restarted
// there) and its counts on a plain loopback listener.
func easRole(args []string) {
	fs := flag.NewFlagSet("eas", flag.ExitOnError)
	addr := fs.String("addr", "", "listen address")
	statsAddr := fs.String("stats", "", "counts listen address")
	dir := fs.String("dir", "", "files (server.crt, server.key, asa.keytab)")
	fs.Parse(args)
	cert := serverCert(*dir)
	kt, err := keytab.Load(filepath.Join(*dir, "asa.keytab"))
	if err != nil {
		log.Fatal(err)
	}
	raw, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	ln := &acceptCurve{Listener: raw, start: time.Now()}
	s := eastest.Listen(ln, &kerberos.Acceptor{Keytab: kt, Principal: "EXCHASA$", TokenChecking: kerberos.TokenCheckingRequire},
		&tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
	sl, err := net.Listen("tcp", *statsAddr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("ready")
	log.Fatal(http.Serve(sl, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/early" {
			json.NewEncoder(w).Encode(s.EarlyEnds())
			return
		}
		if r.URL.Path == "/accepts" {
			json.NewEncoder(w).Encode(ln.curve())
			return
		}
		json.NewEncoder(w).Encode(s.Stats())
	})))
}

// acceptCurve counts the connections a listener accepts in each 250 ms of
// its first 10 s: after the stand-in's restart, how the gateway's users'
// pools come back (UserPools.MaxDialsPerHost, DialBackoff).
type acceptCurve struct {
	net.Listener
	start  time.Time
	mu     sync.Mutex
	counts [40]int
}

func (a *acceptCurve) Accept() (net.Conn, error) {
	c, err := a.Listener.Accept()
	if err == nil {
		if i := int(time.Since(a.start) / (250 * time.Millisecond)); i < len(a.counts) {
			a.mu.Lock()
			a.counts[i]++
			a.mu.Unlock()
		}
	}
	return c, err
}

func (a *acceptCurve) curve() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]int(nil), a.counts[:]...)
}

// soakResult is what the phones report.
type soakResult struct {
	Requests map[string]int64 `json:"requests"` // by command
	OK       int64            `json:"ok"`
	NotMine  int64            `json:"not_mine"` // an answer for another user
	Aborted  int64            `json:"aborted"`  // Pings the phone gave up on itself
	// Unfinished are Pings answered 200 whose body ended before "done".
	Unfinished []unfinishedPing `json:"unfinished"`
	// Slow counts the non-Ping requests slower than slowRequest by the
	// phase that took longest; SlowExamples describe the first few.
	Slow         map[string]int64 `json:"slow"`
	SlowExamples []string         `json:"slow_examples"`
	Drops        int64            `json:"drops"` // keep-alive connections dropped by the phone
	// Errors by minute of the run and kind.
	Errors map[string]map[string]int64 `json:"errors"`
	P50    float64                     `json:"p50_ms"`
	P99    float64                     `json:"p99_ms"`
	// After the first two minutes, when every phone's user has a ticket.
	WarmP50 float64 `json:"warm_p50_ms"`
	WarmP99 float64 `json:"warm_p99_ms"`
}

// soakPhones runs the phones until the duration has passed.
func soakPhones(args []string) {
	fs := flag.NewFlagSet("phones", flag.ExitOnError)
	base := fs.String("url", "", "gateway URL")
	dir := fs.String("dir", "", "files")
	users := fs.Int("users", 500, "users")
	perUser := fs.Int("per-user", 4, "phones per user")
	d := fs.Duration("duration", 20*time.Minute, "how long")
	fs.Parse(args)
	start := time.Now()
	stop := start.Add(*d)
	var mu sync.Mutex
	res := soakResult{Requests: map[string]int64{}, Errors: map[string]map[string]int64{}, Slow: map[string]int64{}}
	var lat, warmLat []time.Duration
	var ok, notMine, aborted, drops atomic.Int64
	fail := func(kind string) {
		m := strconv.Itoa(int(time.Since(start).Minutes()))
		mu.Lock()
		if res.Errors[m] == nil {
			res.Errors[m] = map[string]int64{}
		}
		res.Errors[m][kind]++
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for u := 0; u < *users; u++ {
		user := userName(u)
		for j := 0; j < *perUser; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := mrand.New(mrand.NewPCG(uint64(u), uint64(j)))
				// Phones do not all wake in the same second.
				time.Sleep(time.Duration(rng.Int64N(int64(30 * time.Second))))
				c := device(*dir, user)
				c.Transport.(*http.Transport).MaxConnsPerHost = 1
				dev := fmt.Sprintf("H%sD%d", user, j)
				var mine, warm []time.Duration
				for time.Now().Before(stop) {
					if rng.IntN(100) < 3 {
						c.CloseIdleConnections() // the phone's network changed
						drops.Add(1)
					}
					cmd := pick(rng)
					mu.Lock()
					res.Requests[cmd]++
					mu.Unlock()
					t0 := time.Now()
					kind, wasAborted, early, slowPhase, slowDetail := soakOnce(c, *base, user, dev, cmd, rng, stop)
					if slowPhase != "" {
						mu.Lock()
						res.Slow[slowPhase]++
						if len(res.SlowExamples) < 12 {
							res.SlowExamples = append(res.SlowExamples, slowDetail)
						}
						mu.Unlock()
					}
					if early != nil {
						mu.Lock()
						res.Unfinished = append(res.Unfinished, *early)
						mu.Unlock()
					}
					switch {
					case wasAborted:
						aborted.Add(1)
					case kind == "not mine":
						notMine.Add(1)
					case kind != "":
						fail(cmd + ": " + kind)
						time.Sleep(time.Second) // a phone waits before it tries again
					default:
						ok.Add(1)
						if cmd != "Ping" {
							mine = append(mine, time.Since(t0))
							if t0.Sub(start) > 2*time.Minute {
								warm = append(warm, time.Since(t0))
							}
						}
					}
					time.Sleep(time.Duration(200+rng.IntN(1800)) * time.Millisecond)
				}
				mu.Lock()
				lat = append(lat, mine...)
				warmLat = append(warmLat, warm...)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	res.OK, res.NotMine, res.Aborted, res.Drops = ok.Load(), notMine.Load(), aborted.Load(), drops.Load()
	res.P50, res.P99 = percentiles(lat)
	res.WarmP50, res.WarmP99 = percentiles(warmLat)
	json.NewEncoder(os.Stdout).Encode(res)
}

// unfinishedPing is what a phone saw of a Ping that ended early, to find it
// in the gateway's log (by the phone's address) and the stand-in's.
type unfinishedPing struct {
	At     time.Time     `json:"at"`
	User   string        `json:"user"`
	Device string        `json:"device"`
	Local  string        `json:"local"` // the phone's address, the gateway log's remote
	Reused bool          `json:"reused"`
	Asked  time.Duration `json:"asked"`
	Took   time.Duration `json:"took"`
	Rest   string        `json:"rest"` // the body after the first line
}

// slowRequest is the latency past which a request's phases are reported.
const slowRequest = 250 * time.Millisecond

// phases are the times of one request's steps (httptrace).
type phases struct {
	getConn, gotConn, connectStart, connectDone, tlsStart, tlsDone, wrote, firstByte time.Time
}

// slowest names the phase that took longest of a slow request, and
// describes all of them.
func (p *phases) slowest(end time.Time, cmd string, reused bool, total time.Duration) (string, string) {
	span := func(a, b time.Time) time.Duration {
		if a.IsZero() || b.IsZero() {
			return 0
		}
		return b.Sub(a)
	}
	steps := []struct {
		name string
		d    time.Duration
	}{
		{"waiting for a connection", span(p.getConn, p.gotConn) - span(p.connectStart, p.connectDone) - span(p.tlsStart, p.tlsDone)},
		{"TCP connect", span(p.connectStart, p.connectDone)},
		{"TLS handshake", span(p.tlsStart, p.tlsDone)},
		{"writing the request", span(p.gotConn, p.wrote)},
		{"the gateway's answer (request written to first byte)", span(p.wrote, p.firstByte)},
		{"reading the body", span(p.firstByte, end)},
	}
	best := 0
	var parts []string
	for i, st := range steps {
		if st.d > steps[best].d {
			best = i
		}
		parts = append(parts, fmt.Sprintf("%s %v", st.name, st.d.Round(time.Millisecond)))
	}
	return steps[best].name, fmt.Sprintf("%s in %v (connection reused: %v): %s", cmd, total.Round(time.Millisecond), reused, strings.Join(parts, ", "))
}

// pick chooses a command: Pings and Syncs most, as phones send them.
func pick(rng *mrand.Rand) string {
	switch n := rng.IntN(100); {
	case n < 35:
		return "Ping"
	case n < 70:
		return "Sync"
	case n < 85:
		return "FolderSync"
	default:
		return "SendMail"
	}
}

// soakOnce sends one command and checks the answer: the phone's own user,
// and for SendMail the length and SHA-256 of what it sent. A Ping is held
// 10-60 s by the stand-in; one in twenty is given up by the phone first.
func soakOnce(c *http.Client, base, user, dev, cmd string, rng *mrand.Rand, stop time.Time) (kind string, aborted bool, early *unfinishedPing, slowPhase, slowDetail string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t0 := time.Now()
	var local string
	var reused bool
	var tr phases
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GetConn: func(string) { tr.getConn = time.Now() },
		GotConn: func(i httptrace.GotConnInfo) {
			local, reused = i.Conn.LocalAddr().String(), i.Reused
			tr.gotConn = time.Now()
		},
		ConnectStart:         func(string, string) { tr.connectStart = time.Now() },
		ConnectDone:          func(string, string, error) { tr.connectDone = time.Now() },
		TLSHandshakeStart:    func() { tr.tlsStart = time.Now() },
		TLSHandshakeDone:     func(tls.ConnectionState, error) { tr.tlsDone = time.Now() },
		WroteRequest:         func(httptrace.WroteRequestInfo) { tr.wrote = time.Now() },
		GotFirstResponseByte: func() { tr.firstByte = time.Now() },
	})
	defer func() {
		if kind == "" && !aborted && cmd != "Ping" {
			if d := time.Since(t0); d > slowRequest {
				slowPhase, slowDetail = tr.slowest(time.Now(), cmd, reused, d)
			}
		}
	}()
	var body []byte
	if cmd == "SendMail" {
		body = make([]byte, 1024+rng.IntN(63*1024))
		rand.Read(body)
	}
	u := base + "/Microsoft-Server-ActiveSync?Cmd=" + cmd + "&User=" + user + "&DeviceId=" + dev + "&DeviceType=Bench"
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/vnd.ms-sync.wbxml")
	abortAfter, hold := time.Duration(0), time.Duration(0)
	if cmd == "Ping" {
		hold = time.Duration(10+rng.IntN(50)) * time.Second
		if left := time.Until(stop); hold > left {
			hold = max(left, time.Second)
		}
		req.Header.Set(eastest.HoldHeader, hold.String())
		if rng.IntN(20) == 0 {
			abortAfter = time.Duration(1+rng.IntN(9)) * time.Second
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		return errKind(err), false, nil, "", ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		io.Copy(io.Discard, resp.Body)
		return "status " + strconv.Itoa(resp.StatusCode), false, nil, "", ""
	}
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	if err != nil {
		return "short answer: " + errKind(err), false, nil, "", ""
	}
	if strings.TrimSpace(first) != user {
		return "not mine", false, nil, "", ""
	}
	if abortAfter > 0 {
		time.AfterFunc(abortAfter, cancel)
	}
	rest, err := io.ReadAll(br)
	if abortAfter > 0 && ctx.Err() != nil {
		// The phone gave up. Go's HTTP/1.1 client then usually returns
		// an error from the body, but not always: in a few cancellations
		// of a hundred the server's reaction to the closing connection
		// arrives first and the body ends cleanly, short (reproduced
		// with net/http's client and server alone).
		return "", true, nil, "", ""
	}
	if err != nil {
		return "answer cut: " + errKind(err), false, nil, "", ""
	}
	if cmd == "SendMail" {
		sum := sha256.Sum256(body)
		if strings.TrimSpace(string(rest)) != fmt.Sprintf("%d %s", len(body), hex.EncodeToString(sum[:])) {
			return "body mismatch", false, nil, "", ""
		}
	}
	if cmd == "Ping" && strings.TrimSpace(string(rest)) != "done" {
		return "Ping not done", false, &unfinishedPing{At: time.Now(), User: user, Device: dev, Local: local, Reused: reused,
			Asked: hold, Took: time.Since(t0), Rest: string(rest)}, "", ""
	}
	return "", false, nil, "", ""
}

// soak runs the soak and writes its report.
func soak(args []string) error {
	fs := flag.NewFlagSet("soak", flag.ExitOnError)
	out := fs.String("out", "bench/results/soak.md", "where to write the results")
	users := fs.Int("users", 500, "users")
	perUser := fs.Int("per-user", 4, "phones per user")
	d := fs.Duration("duration", 20*time.Minute, "how long the phones run")
	lifetime := fs.Duration("lifetime", 10*time.Minute, "ticket lifetime the gateway asks for (refreshes go on through the KDC restart)")
	fs.Parse(args)
	if _, err := raiseFiles(); err != nil {
		log.Printf("bench: open-file limit: %v", err)
	}
	ctx := context.Background()
	b, err := setUp(ctx, names(*users), *perUser)
	if err != nil {
		return err
	}
	defer b.close()
	if err := b.writeKrb5(*lifetime); err != nil {
		return err
	}
	if err := b.writeASAKeytab(ctx); err != nil {
		return err
	}
	easAddr, statsAddr := freeAddr(), freeAddr()
	startEAS := func() (func(), error) {
		stop, _, err := b.child("eas", "-addr", easAddr, "-stats", statsAddr, "-dir", b.dir)
		return stop, err
	}
	stopEAS, err := startEAS()
	if err != nil {
		return err
	}
	defer func() { stopEAS() }()
	adminAddr := freeAddr()
	gw, err := b.startGateway("https://"+easAddr, map[string]any{"admin": map[string]any{"listen": adminAddr}})
	if err != nil {
		return err
	}
	defer gw.stop()
	// The phones of the first 50 users log every step (DebugDevices), so a
	// slow request can be followed through the gateway.
	traced := map[string]bool{}
	for u := 0; u < min(50, *users); u++ {
		for j := 0; j < *perUser; j++ {
			dev := fmt.Sprintf("H%sD%d", userName(u), j)
			req, _ := http.NewRequest(http.MethodPut, "http://"+adminAddr+"/v1/debug/devices/"+dev, nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
				traced[dev] = true
			}
		}
	}
	phones := *users * *perUser
	b.printf("# Soak (%s)\n\n", time.Now().UTC().Format("2006-01-02"))
	b.printf("`go run ./bench/gateway soak -users %d -per-user %d -duration %v -lifetime %v` (`make soak`): %d cores; lab Samba 4 KDC on loopback; "+
		"%d phones (%d users × %d) on keep-alive connections with client certificates, through examples/gateway to the Exchange stand-in (eastest: "+
		"tickets accepted with the ASA's keys, answers name the user it authenticated). Mix: Ping 35%% (held 10-60 s; one in twenty given up by "+
		"the phone), Sync 35%%, FolderSync 15%%, SendMail 15%% (1-64 KiB, echoed as length and SHA-256); 0.2-2 s between requests; a phone drops its "+
		"connection before 3%% of its requests. Tickets of %v (krb5.conf), so refreshes go on during the KDC restart.\n\n",
		*users, *perUser, *d, *lifetime, numCPU(), phones, *users, *perUser, *lifetime)

	c0, tcp0 := b.relay.Counts(), tcpCounters()
	start := time.Now()
	phoneCmd := b.command("phones", "-url", gw.url, "-dir", b.dir, "-users", strconv.Itoa(*users), "-per-user", strconv.Itoa(*perUser),
		"-duration", d.String())
	var phoneOut bytes.Buffer
	phoneCmd.Stdout = &phoneOut
	if err := phoneCmd.Start(); err != nil {
		return err
	}
	phonesDone := make(chan error, 1)
	go func() { phonesDone <- phoneCmd.Wait() }()

	type sample struct {
		at               time.Duration
		rss              int64
		goroutines, held float64
		exch             int
		event            string
		slow, answered   float64 // non-Ping requests in the minute: over 250 ms, all
	}
	var samples []sample
	var mixed, deviceCreds, cancelled int64
	var warmAll, warmFast, lastAll, lastFast float64
	var early []eastest.EarlyEnd
	easStats := func() eastest.Stats {
		var st eastest.Stats
		b.getJSON("http://"+statsAddr+"/", &st)
		var e []eastest.EarlyEnd
		b.getJSON("http://"+statsAddr+"/early", &e)
		early = append(early, e...)
		return st
	}
	events := map[int]string{}
	var curveMu sync.Mutex
	var reconnects []int // connections the restarted stand-in accepted, per 250 ms
	kdcAt, easAt := *d/3, 2**d/3
	var kdcDown, easDown time.Duration
	minute := time.NewTicker(time.Minute)
	defer minute.Stop()
	kdcTimer, easTimer := time.NewTimer(kdcAt), time.NewTimer(easAt)
	var phoneErr error
loop:
	for {
		select {
		case phoneErr = <-phonesDone:
			break loop
		case <-kdcTimer.C:
			t := time.Now()
			log.Printf("soak: restarting the KDC")
			if err := b.lab.Restart(ctx); err != nil {
				return fmt.Errorf("KDC restart: %w", err)
			}
			kdcDown = time.Since(t)
			events[int(time.Since(start).Minutes())] = fmt.Sprintf("KDC restarted (down %v)", kdcDown.Round(time.Millisecond))
		case <-easTimer.C:
			st := easStats()
			mixed, deviceCreds, cancelled = mixed+st.Mixed, deviceCreds+st.DeviceCredentials, cancelled+st.Cancelled
			t := time.Now()
			log.Printf("soak: restarting the Exchange stand-in")
			stopEAS()
			if stopEAS, err = startEAS(); err != nil {
				return fmt.Errorf("stand-in restart: %w", err)
			}
			easDown = time.Since(t)
			events[int(time.Since(start).Minutes())] = fmt.Sprintf("Exchange stand-in restarted (down %v)", easDown.Round(time.Millisecond))
			time.AfterFunc(12*time.Second, func() {
				var c []int
				b.getJSON("http://"+statsAddr+"/accepts", &c)
				curveMu.Lock()
				reconnects = c
				curveMu.Unlock()
			})
		case <-minute.C:
			all, fast := gatewayFast(adminAddr)
			if len(samples) == 1 { // two minutes in: warm
				warmAll, warmFast = all, fast
			}
			c := b.relay.Counts()
			s := sample{at: time.Since(start).Round(time.Second), rss: rss(gw.cmd.Process.Pid), goroutines: metric(adminAddr, "go_goroutines"),
				held: metric(adminAddr, "seg_long_polls_active"), exch: c.S4U2Self + c.S4U2Proxy - c0.S4U2Self - c0.S4U2Proxy,
				slow: (all - fast) - (lastAll - lastFast), answered: all - lastAll}
			lastAll, lastFast = all, fast
			samples = append(samples, s)
			log.Printf("soak: %v: RSS %d KiB, %.0f goroutines, %.0f long polls, %d S4U exchanges", s.at, s.rss, s.goroutines, s.held, s.exch)
		}
	}
	if phoneErr != nil {
		return fmt.Errorf("phones: %v", phoneErr)
	}
	st := easStats()
	mixed, deviceCreds, cancelled = mixed+st.Mixed, deviceCreds+st.DeviceCredentials, cancelled+st.Cancelled
	c1, tcp1 := b.relay.Counts(), tcpCounters()
	endAll, endFast := gatewayFast(adminAddr)
	var res soakResult
	if err := json.Unmarshal(phoneOut.Bytes(), &res); err != nil {
		return fmt.Errorf("phones' report: %v", err)
	}
	var total, failed int64
	for _, n := range res.Requests {
		total += n
	}
	for _, m := range res.Errors {
		for _, n := range m {
			failed += n
		}
	}
	b.printf("| what | figure |\n|---|---|\n")
	b.printf("| requests | %d (%s) over %v, %.0f/s |\n", total, kinds(res.Requests), *d, float64(total)/d.Seconds())
	b.printf("| answered, checked | %d |\n", res.OK)
	b.printf("| **answers for another user** (phones' check) / connections that carried two users (stand-in) | **%d / %d** |\n", res.NotMine, mixed)
	b.printf("| device credentials that reached the stand-in | %d |\n", deviceCreds)
	b.printf("| Pings the phones gave up on themselves / held requests the stand-in saw end early (its restart's not counted) | %d / %d |\n", res.Aborted, cancelled)
	b.printf("| connections the phones dropped | %d |\n", res.Drops)
	b.printf("| failed | %d (%.3f%%), by minute below |\n", failed, 100*float64(failed)/float64(max(total, 1)))
	b.printf("| p50 / p99 of non-Ping requests: all; after the first 2 minutes (every user's ticket fetched) | %.2f ms / %.2f ms; %.2f ms / %.2f ms |\n",
		res.P50, res.P99, res.WarmP50, res.WarmP99)
	b.printf("| gateway log, errors by kind | %s |\n", kinds(b.logErrors()))
	b.printf("| non-Ping requests slower than %v, by the phase that took longest (the phones' clocks) | %s |\n", slowRequest, strings.ReplaceAll(kinds(res.Slow), "|", "/"))
	b.printf("| non-Ping requests the gateway answered in over 250 ms by its own histogram: all; after the first 2 minutes | %.0f of %.0f; %.0f of %.0f |\n",
		endAll-endFast, endAll, (endAll-endFast)-(warmAll-warmFast), endAll-warmAll)
	b.printf("| TCP on this host during the run: SYNs sent again / listen queue overflows / drops | %d / %d / %d |\n",
		tcp1["TCPSynRetrans"]-tcp0["TCPSynRetrans"], tcp1["ListenOverflows"]-tcp0["ListenOverflows"], tcp1["ListenDrops"]-tcp0["ListenDrops"])
	b.printf("| KDC: AS / S4U2Self / S4U2Proxy / sent again | %d / %d / %d / %d |\n\n", c1.AS-c0.AS, c1.S4U2Self-c0.S4U2Self, c1.S4U2Proxy-c0.S4U2Proxy, c1.Resent-c0.Resent)
	curveMu.Lock()
	if len(reconnects) > 0 {
		b.printf("Connections the restarted Exchange stand-in accepted from the gateway in each 250 ms of its first 10 s "+
			"(%d users' pools; at most `UserPools.MaxDialsPerHost` = 32 dials at once, dials paced by `DialBackoff` after failures): %s.\n\n",
			*users, strings.Trim(fmt.Sprint(reconnects), "[]"))
	}
	curveMu.Unlock()
	b.printf("Gateway each minute:\n\n| at | RSS | goroutines | long polls held | S4U exchanges so far | non-Ping requests over 250 ms (gateway's histogram) | event in the minute before | failed requests in the minute before |\n|---|---|---|---|---|---|---|---|\n")
	for i, s := range samples {
		b.printf("| %v | %.1f MiB | %.0f | %.0f | %d | %.0f of %.0f | %s | %s |\n", s.at, float64(s.rss)/1024, s.goroutines, s.held, s.exch, s.slow, s.answered, events[i],
			strings.ReplaceAll(kinds(res.Errors[strconv.Itoa(i)]), "|", "/"))
	}
	b.printf("\n")
	if len(res.SlowExamples) > 0 {
		b.printf("The first slow requests, step by step:\n\n")
		for _, e := range res.SlowExamples {
			b.printf("- %s\n", e)
		}
		b.printf("\n")
	}
	if steps := b.slowTraces(traced, start.Add(2*time.Minute), 12); len(steps) > 0 {
		b.printf("Slow non-Ping requests after the first 2 minutes of the traced phones (the first users' phones log every step), step by step as the gateway logged them:\n\n")
		for _, st := range steps {
			b.printf("- %s\n", st)
		}
		b.printf("\n")
	}
	if len(res.Unfinished) > 0 {
		b.printf("Pings answered 200 whose body ended before the stand-in's \"done\", each as the phone, the gateway's log and the stand-in saw it:\n\n")
		for _, u := range res.Unfinished {
			b.printf("- %v into the run: phone %s (%s) from %s (connection reused: %v) asked a hold of %v, got the end after %v, rest %q\n",
				u.At.Sub(start).Round(time.Second), u.Device, u.User, u.Local, u.Reused, u.Asked, u.Took.Round(time.Millisecond), u.Rest)
			for _, l := range b.logLines("remote", u.Local) {
				b.printf("  - gateway: %s\n", l)
			}
			for _, e := range early {
				if e.User == u.User && !e.At.Before(u.At.Add(-u.Took)) && e.At.Before(u.At.Add(time.Second)) {
					b.printf("  - stand-in: ended %v into a hold of %v, client %s\n", e.Held.Round(time.Millisecond), e.Asked, e.Remote)
				}
			}
		}
		b.printf("\n")
	}
	return os.WriteFile(*out, []byte(b.report.String()), 0o644)
}

// logLines returns the gateway's log lines whose field key is value.
func (b *bench) logLines(key, value string) []string {
	f, err := os.Open(filepath.Join(b.dir, "gateway.log"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) == nil && line[key] == value {
			out = append(out, sc.Text())
		}
	}
	return out
}

// writeASAKeytab exports the ASA's keys (samba-tool) for the stand-ins.
func (b *bench) writeASAKeytab(ctx context.Context) error {
	kt, err := b.lab.ExportKeytab(ctx, "EXCHASA$")
	if err != nil {
		return err
	}
	ktb, err := kt.Marshal()
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(b.dir, "asa.keytab"), ktb, 0o600)
}

// gatewayFast reads, from the gateway's own request-duration histogram, how
// many non-Ping requests it answered in all and within 250 ms: the
// gateway's view, to hold against the phones'.
func gatewayFast(admin string) (all, fast float64) {
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + admin + "/metrics")
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, "seg_request_duration_seconds_") || strings.Contains(l, `cmd="Ping"`) {
			continue
		}
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch {
		case strings.HasPrefix(l, "seg_request_duration_seconds_count"):
			all += v
		case strings.HasPrefix(l, "seg_request_duration_seconds_bucket") && strings.Contains(l, `le="0.25"`):
			fast += v
		}
	}
	return all, fast
}

// slowTraces finds, in the gateway's log, the first n non-Ping requests of
// the traced devices answered after from that took over slowRequest, each
// with the time of each of its steps from the first.
func (b *bench) slowTraces(traced map[string]bool, from time.Time, n int) []string {
	f, err := os.Open(filepath.Join(b.dir, "gateway.log"))
	if err != nil {
		return nil
	}
	defer f.Close()
	type line struct {
		Time     time.Time `json:"time"`
		Msg      string    `json:"msg"`
		Device   string    `json:"device"`
		Step     string    `json:"step"`
		Cmd      string    `json:"cmd"`
		Took     int64     `json:"took"`
		Duration int64     `json:"duration"`
	}
	open := map[string][]line{} // device -> the steps of its request in progress
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() && len(out) < n {
		var l line
		if json.Unmarshal(sc.Bytes(), &l) != nil || !traced[l.Device] {
			continue
		}
		switch {
		case l.Msg == "device debug" && l.Step == "request":
			open[l.Device] = []line{l}
		case l.Msg == "device debug":
			open[l.Device] = append(open[l.Device], l)
		case l.Msg == "activesync":
			steps := open[l.Device]
			delete(open, l.Device)
			if l.Cmd == "Ping" || time.Duration(l.Duration) <= slowRequest || len(steps) == 0 || l.Time.Before(from) {
				continue
			}
			var parts []string
			for _, st := range steps {
				p := fmt.Sprintf("%s +%v", st.Step, st.Time.Sub(steps[0].Time).Round(time.Millisecond))
				if st.Took > 0 {
					p += fmt.Sprintf(" (took %v)", time.Duration(st.Took).Round(time.Millisecond))
				}
				parts = append(parts, p)
			}
			out = append(out, fmt.Sprintf("%s %s, %v at %s: %s", l.Device, l.Cmd, time.Duration(l.Duration).Round(time.Millisecond),
				l.Time.Format("15:04:05"), strings.Join(parts, ", ")))
		}
	}
	return out
}
