package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segkcd/segkcd/internal/testinfra/eastest"
)

// The roles run as child processes of "run", so that the proxies, the
// backend and the load generator each have their own process (and memory
// figure).

// backend is the same upstream for all three paths: it answers "ok" at
// once, or holds the answer open while HoldHeader says so. It does not
// check the Negotiate header: what is measured is the proxies.
func backend(args []string) {
	fs := flag.NewFlagSet("backend", flag.ExitOnError)
	addr := fs.String("addr", "", "listen address")
	dir := fs.String("dir", "", "files")
	fs.Parse(args)
	cert := serverCert(*dir)
	srv := &http.Server{Addr: *addr, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			if r.Header.Get(eastest.HoldHeader) == "quiet" {
				<-r.Context().Done() // an answer that never begins, as a Ping's at Exchange
				return
			}
			if r.Header.Get(eastest.HoldHeader) != "" {
				w.WriteHeader(200)
				io.WriteString(w, "held\n")
				http.NewResponseController(w).Flush()
				<-r.Context().Done()
				return
			}
			io.WriteString(w, "ok\n")
		})}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("ready")
	log.Fatal(srv.ServeTLS(ln, "", ""))
}

// deviceTLS is the listener configuration the gateway and the
// ReverseProxy both use: the same certificate, the same client CA check.
func deviceTLS(dir string) *tls.Config {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"))
	if err != nil {
		log.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool(dir), ClientAuth: tls.VerifyClientCertIfGiven,
		NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}
}

func pool(dir string) *x509.CertPool {
	b, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		log.Fatal(err)
	}
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(b)
	return p
}

// revproxy is the peer: httputil.ReverseProxy behind the same TLS, with
// one shared upstream pool (what the gateway must not do with Kerberos,
// and why it is the cheapest possible proxy).
func revproxy(args []string) {
	fs := flag.NewFlagSet("revproxy", flag.ExitOnError)
	addr := fs.String("addr", "", "listen address")
	target := fs.String("target", "", "backend URL")
	dir := fs.String("dir", "", "files")
	negotiate := fs.Int("negotiate", 0, "bytes of a made-up Negotiate header sent upstream, as seg sends a ticket's")
	fs.Parse(args)
	u, _ := url.Parse(*target)
	var auth string
	if *negotiate > 0 {
		auth = "Negotiate " + strings.Repeat("Y", *negotiate)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.SetXForwarded()
			if auth != "" {
				pr.Out.Header.Set("Authorization", auth)
			}
		},
		FlushInterval: -1,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool(*dir)}, MaxIdleConnsPerHost: 1024,
			IdleConnTimeout: 90 * time.Second, DisableCompression: true},
	}
	srv := &http.Server{Handler: rp, TLSConfig: deviceTLS(*dir), ReadHeaderTimeout: 30 * time.Second,
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("ready")
	log.Fatal(srv.ServeTLS(ln, "", ""))
}

// device is one phone: a user's certificate and keep-alive connection.
func device(dir, user string) *http.Client {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "users", user+".crt"), filepath.Join(dir, "users", user+".key"))
	if err != nil {
		log.Fatal(err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool(dir), Certificates: []tls.Certificate{cert}},
		MaxIdleConnsPerHost: 64, DisableCompression: true}}
}

// easURL is a Sync of user's bench device, the warm path's request.
func easURL(base, user string) string { return cmdURL(base, "Sync", user) }

// cmdURL is an ActiveSync request of user's bench device.
func cmdURL(base, cmd, user string) string {
	return base + "/Microsoft-Server-ActiveSync?Cmd=" + cmd + "&User=" + user + "&DeviceId=BENCH" + user + "&DeviceType=Bench"
}

// loadResult is what a load run reports.
type loadResult struct {
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	RPS      float64 `json:"rps"`
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
}

// load drives conns devices (users round robin) for a duration and prints
// a loadResult.
func load(args []string) {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	base := fs.String("url", "", "base URL")
	dir := fs.String("dir", "", "files")
	users := fs.Int("users", 100, "users")
	conns := fs.Int("conns", 100, "devices in parallel")
	d := fs.Duration("duration", 10*time.Second, "how long")
	rate := fs.Float64("rate", 0, "open loop: requests per second in all, each timed from when it was due (0: closed loop, as fast as the devices go)")
	fs.Parse(args)
	var requests, errors atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	stop := time.Now().Add(*d)
	// Open loop: the schedule does not wait for slow answers, so a stall
	// shows in the latency of every request due during it.
	var due chan time.Time
	if *rate > 0 {
		due = make(chan time.Time, 1<<16)
		go func() {
			defer close(due)
			interval := time.Duration(float64(time.Second) / *rate)
			for t := time.Now(); t.Before(stop); t = t.Add(interval) {
				time.Sleep(time.Until(t))
				due <- t
			}
		}()
	}
	var wg sync.WaitGroup
	for i := 0; i < *conns; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			user := userName(i % *users)
			c := device(*dir, user)
			url := easURL(*base, user)
			var mine []time.Duration
			for time.Now().Before(stop) {
				t0 := time.Now()
				if due != nil {
					var ok bool
					if t0, ok = <-due; !ok {
						break
					}
				}
				resp, err := c.Post(url, "application/vnd.ms-sync.wbxml", nil)
				if err != nil {
					errors.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errors.Add(1)
					continue
				}
				mine = append(mine, time.Since(t0))
				requests.Add(1)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	r := loadResult{Requests: requests.Load(), Errors: errors.Load(), RPS: float64(requests.Load()) / d.Seconds()}
	r.P50, r.P99 = percentiles(lat)
	json.NewEncoder(os.Stdout).Encode(r)
}

// hold opens perUser held Pings for each user, in steps: -users is a
// list of cumulative user counts ("100,500,980"). After each step, once
// every Ping has its first bytes, it prints "ready <held> failed <n>" and
// waits for a line on its standard input before the next; after the last it
// keeps them until it is killed.
func hold(args []string) {
	fs := flag.NewFlagSet("hold", flag.ExitOnError)
	base := fs.String("url", "", "base URL")
	dir := fs.String("dir", "", "files")
	steps := fs.String("users", "1000", "cumulative user counts, comma-separated")
	perUser := fs.Int("per-user", 10, "held requests per user")
	quiet := fs.Bool("quiet", false, "the backend's answers do not begin: a Ping counts as held once it is written")
	fs.Parse(args)
	var ready, failed atomic.Int64
	sem := make(chan struct{}, 200) // handshakes in flight
	in := bufio.NewScanner(os.Stdin)
	from := 0
	for _, f := range strings.Split(*steps, ",") {
		to, err := strconv.Atoi(f)
		if err != nil || to < from {
			log.Fatalf("hold: bad -users %q", *steps)
		}
		for u := from; u < to; u++ {
			user := userName(u)
			c := device(*dir, user)
			for j := 0; j < *perUser; j++ {
				// A device id each: the gateway ends a device's older Ping
				// when the device sends a new one.
				device := fmt.Sprintf("H%sD%d", user, j)
				go func() {
					sem <- struct{}{}
					req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost,
						*base+"/Microsoft-Server-ActiveSync?Cmd=Ping&User="+user+"&DeviceId="+device+"&DeviceType=Bench", nil)
					req.Header.Set(eastest.HoldHeader, "1h")
					if *quiet {
						req.Header.Set(eastest.HoldHeader, "quiet")
						req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
							WroteRequest: func(httptrace.WroteRequestInfo) { <-sem; ready.Add(1) }}))
					}
					resp, err := c.Do(req)
					if *quiet {
						if err != nil {
							failed.Add(1)
						}
						return
					}
					if err != nil {
						<-sem
						failed.Add(1)
						log.Print(err)
						return
					}
					buf := make([]byte, 5)
					io.ReadFull(resp.Body, buf)
					<-sem
					ready.Add(1)
					io.Copy(io.Discard, resp.Body) // until killed
				}()
			}
		}
		for ready.Load()+failed.Load() < int64(to**perUser) {
			time.Sleep(100 * time.Millisecond)
		}
		if *quiet {
			time.Sleep(5 * time.Second) // for the proxy to send the last ones on, and park them
		}
		fmt.Printf("ready %d failed %d\n", ready.Load(), failed.Load())
		from = to
		in.Scan()
	}
	select {}
}

// percentiles are the p50 and p99 of lat, in ms (it sorts lat).
func percentiles(lat []time.Duration) (p50, p99 float64) {
	if len(lat) == 0 {
		return 0, 0
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return float64(lat[len(lat)/2]) / 1e6, float64(lat[len(lat)*99/100]) / 1e6
}

// serverCert is the certificate the bench's servers share.
func serverCert(dir string) tls.Certificate {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"))
	if err != nil {
		log.Fatal(err)
	}
	return cert
}

func userName(i int) string { return fmt.Sprintf("bu%04d", i) }
