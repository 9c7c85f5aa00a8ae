package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/internal/testinfra/eastest"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestScaleOutBehindHAProxy runs two replicas of the gateway behind HAProxy
// in TCP mode (so the client certificates reach the gateways), drives
// traffic for many users, kills one replica mid-run, and checks that every
// request after the failover is served by the other, for the right user.
// Replicas share nothing: each has its own ticket cache.
func TestScaleOutBehindHAProxy(t *testing.T) {
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Fatal("haproxy is missing: scripts/lab deps installs it (Debian's haproxy)")
	}
	f := newFixture(t)
	ctx := context.Background()
	c, err := f.lab.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const users = 24
	var names []string
	for i := 0; i < users; i++ {
		n := fmt.Sprintf("scale%02d", i)
		names = append(names, n)
		if _, err := c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: n, Password: lab.UserPassword,
			UserPrincipalName: n + "@" + f.lab.DNSDomain, PasswordNeverExpires: true}); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()

	// Two replicas from the same configuration but their listen address.
	var replicas []*process
	var addrs []string
	for i := 0; i < 2; i++ {
		conf := f.conf
		conf.Listen = freeAddr(t)
		conf.Admin = nil
		f.confPath = f.writeConfig(t, conf)
		replicas = append(replicas, f.start(t))
		addrs = append(addrs, conf.Listen)
	}
	front := freeAddr(t)
	cfg := fmt.Sprintf(`global
  maxconn 4096
defaults
  mode tcp
  timeout connect 2s
  timeout client 1h
  timeout server 1h
  retries 2
  option redispatch
frontend devices
  bind %s
  default_backend gateways
backend gateways
  balance roundrobin
  server a %s check inter 200ms fall 1 rise 2
  server b %s check inter 200ms fall 1 rise 2
`, front, addrs[0], addrs[1])
	hapOut := startHAProxy(t, filepath.Join(f.dir, "haproxy.cfg"), cfg)
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", front); err == nil {
			c.Close()
			break
		}
		if i > 100 {
			t.Fatalf("haproxy did not start:\n%s", hapOut())
		}
		time.Sleep(50 * time.Millisecond)
	}

	type result struct {
		at     time.Time
		user   string
		status int
		got    string
		err    error
	}
	var mu sync.Mutex
	var results []result
	stop := time.Now().Add(6 * time.Second)
	killAt := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	for _, u := range names {
		dev, err := f.deviceCert(t, u)
		if err != nil {
			t.Fatal(err)
		}
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: f.ca.Pool, Certificates: []tls.Certificate{dev.TLS}}}}
		wg.Add(1)
		go func(u string) {
			defer wg.Done()
			for time.Now().Before(stop) {
				resp, err := client.Post("https://"+front+"/Microsoft-Server-ActiveSync?Cmd=Sync&User="+u+"&DeviceId=D"+u+"&DeviceType=T", "", nil)
				r := result{at: time.Now(), user: u, err: err}
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					r.status, r.got = resp.StatusCode, resp.Header.Get(eastest.UserHeader)
				}
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}(u)
	}
	time.Sleep(time.Until(killAt))
	replicas[0].cmd.Process.Kill()
	killed := time.Now()
	servedByB := strings.Count(replicas[1].log(), `"msg":"activesync"`)
	wg.Wait()
	if n := strings.Count(replicas[1].log(), `"msg":"activesync"`) - servedByB; n < 100 {
		t.Errorf("the surviving replica served %d requests after the kill", n)
	}

	// Before the kill both replicas served; after a second of failover,
	// every request succeeds for the right user.
	var before, during, after, failedAfter, wrong int
	for _, r := range results {
		if r.err == nil && r.status == 200 && r.got != r.user {
			wrong++
		}
		switch {
		case r.at.Before(killed):
			before++
		case r.at.Before(killed.Add(time.Second)):
			during++
		default:
			after++
			if r.err != nil || r.status != 200 || r.got != r.user {
				failedAfter++
				t.Logf("after the failover: %s: %d %q %v", r.user, r.status, r.got, r.err)
			}
		}
	}
	t.Logf("%d users; requests: %d before the kill, %d in the second after it, %d later", users, before, during, after)
	if wrong != 0 {
		t.Errorf("%d answers for the wrong user", wrong)
	}
	if failedAfter != 0 || after < 100 {
		t.Errorf("%d of %d requests after the failover failed", failedAfter, after)
	}
	for i, r := range replicas {
		if n := strings.Count(r.log(), `"msg":"activesync"`); n == 0 {
			t.Errorf("replica %d served nothing", i)
		}
	}
}

// startHAProxy writes cfg to path and runs Debian's haproxy on it until the
// test ends; the function it returns gives haproxy's output so far.
func startHAProxy(t *testing.T, path, cfg string) func() string {
	t.Helper()
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	hap := exec.Command("haproxy", "-db", "-f", path)
	hap.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out := &lockedBuffer{}
	hap.Stdout, hap.Stderr = out, out
	if err := hap.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hap.Process.Kill(); hap.Wait() })
	return out.String
}

// lockedBuffer is a strings.Builder that a process writes while the test
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
