package main

import (
	"bufio"
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
	"testing"
	"time"

	"github.com/segkcd/segkcd/internal/testinfra/eastest"
	"github.com/segkcd/segkcd/internal/testinfra/netns"
	"github.com/segkcd/segkcd/internal/testinfra/testpki"
	"github.com/segkcd/segkcd/kerberos"
)

// TestReadinessBehindHAProxy: two replicas behind HAProxy, which asks each
// one's /readyz (option httpchk, with the admin token). Replica a runs in a
// network namespace of the test's own and reaches the KDC over a veth link
// of its own; the test cuts that link. a's /readyz turns 503 naming the
// KDC, HAProxy takes a out of rotation and every device request is served
// by b; with the link restored a is ready and in rotation again.
func TestReadinessBehindHAProxy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("network namespaces need root")
	}
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Fatal("haproxy is missing: scripts/lab deps installs it (Debian's haproxy)")
	}
	f := newFixture(t)
	ctx := context.Background()
	ns := netns.New(t)
	data := ns.Link("10.213.7.1", "10.213.7.2") // devices, the admin API, Exchange
	kdc := ns.Link("10.213.7.5", "10.213.7.6")  // the KDC only: the link the test cuts

	// The KDC over the cuttable link: a TCP relay on its outer end.
	kdcRelay := relay(t, kdc.OuterIP+":0", f.lab.KDCAddr())
	krb5, _ := testpki.WriteFile(f.dir, "krb5-ns.conf", []byte(fmt.Sprintf(`[libdefaults]
 default_realm = %s
 dns_lookup_kdc = false
 udp_preference_limit = 1
[realms]
 %s = {
  kdc = %s
 }
`, f.lab.Realm, f.lab.Realm, kdcRelay)))
	// Exchange over the data link: a stand-in listening there, with a
	// certificate for that address.
	exCert, err := f.ca.Server(data.OuterIP)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", data.OuterIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	kt, err := f.lab.ExportKeytab(ctx, "GWASA$")
	if err != nil {
		t.Fatal(err)
	}
	eastest.Listen(ln, &kerberos.Acceptor{Keytab: kt, Principal: "GWASA$", TokenChecking: kerberos.TokenCheckingRequire}, &tls.Config{Certificates: []tls.Certificate{exCert.TLS}})
	t.Cleanup(func() { ln.Close() })

	const token = "admin-token-0123456789"
	a := f.conf
	a.Listen, a.Krb5Conf = data.InnerIP+":8443", krb5
	a.ExchangeURL, a.ExchangeCAFile = "https://"+ln.Addr().String(), filepath.Join(f.dir, "devices-ca.pem")
	a.Admin = &adminConfig{Listen: data.InnerIP + ":9090", TokenFile: f.conf.Admin.TokenFile}
	a.Policy = nil
	pa := f.startCmd(t, ns.Command(f.bin, "-config", f.writeConfig(t, a)))
	b := f.conf
	b.Listen = freeAddr(t)
	b.Admin = &adminConfig{Listen: freeAddr(t), TokenFile: f.conf.Admin.TokenFile}
	b.Policy = nil
	pb := f.startCmd(t, exec.Command(f.bin, "-config", f.writeConfig(t, b)))

	front, sock := freeAddr(t), filepath.Join(f.dir, "haproxy.sock")
	cfg := fmt.Sprintf(`global
  stats socket %s level admin
defaults
  mode tcp
  timeout connect 2s
  timeout client 1m
  timeout server 1m
  timeout check 5s
frontend devices
  bind %s
  default_backend gateways
backend gateways
  balance roundrobin
  option httpchk
  http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host gateway hdr Authorization "Bearer %s"
  http-check expect status 200
  default-server inter 500ms fall 2 rise 2 on-marked-down shutdown-sessions
  server a %s check port 9090
  server b %s check port %s
`, sock, front, token, a.Listen, b.Listen, b.Admin.Listen[strings.LastIndexByte(b.Admin.Listen, ':')+1:])
	hapOut := startHAProxy(t, filepath.Join(f.dir, "haproxy-ready.cfg"), cfg)

	// state is what HAProxy's health checks made of each server.
	state := func() map[string]string {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return nil
		}
		defer c.Close()
		io.WriteString(c, "show stat\n")
		out := map[string]string{}
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			f := strings.Split(sc.Text(), ",")
			if len(f) > 17 && f[0] == "gateways" && (f[1] == "a" || f[1] == "b") {
				out[f[1]] = f[17] // status: UP, DOWN, or UP/DOWN n/m while it turns
			}
		}
		return out
	}
	waitFor := func(what string, within time.Duration, ok func(map[string]string) bool) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			s := state()
			if ok(s) {
				return time.Since(start)
			}
			if time.Since(start) > within {
				t.Fatalf("%s: HAProxy says %v after %v\nhaproxy:\n%s\nreplica a:\n%s", what, s, within, hapOut(), pa.log())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("both in rotation", 30*time.Second, func(s map[string]string) bool { return s["a"] == "UP" && s["b"] == "UP" })

	alice, err := f.deviceCert(t, "alice")
	if err != nil {
		t.Fatal(err)
	}
	// A new connection each time, so HAProxy's balance is seen.
	sync := func() (int, string) {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{RootCAs: f.ca.Pool, Certificates: []tls.Certificate{alice.TLS}}}}
		resp, err := c.Post("https://"+front+"/Microsoft-Server-ActiveSync?Cmd=Sync&User=alice&DeviceId=READY1&DeviceType=T", "", nil)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header.Get(eastest.UserHeader)
	}
	// The gateway writes its log every 200 ms: count after it has.
	served := func(pr *process) int {
		time.Sleep(500 * time.Millisecond)
		return strings.Count(pr.log(), `"msg":"activesync"`)
	}
	for i := 0; i < 10; i++ {
		if code, who := sync(); code != 200 || who != "alice" {
			t.Fatalf("before the cut: %d %s", code, who)
		}
	}
	if na, nb := served(pa), served(pb); na == 0 || nb == 0 {
		t.Fatalf("before the cut a served %d, b %d", na, nb)
	}

	readyz := func() (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+a.Admin.Listen+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	kdc.Cut()
	out := waitFor("a out of rotation after its KDC link was cut", kdcFresh+20*time.Second, func(s map[string]string) bool {
		return strings.HasPrefix(s["a"], "DOWN") && s["b"] == "UP"
	})
	t.Logf("a left rotation %v after the cut", out.Round(100*time.Millisecond))
	if code, body := readyz(); code != 503 || !strings.Contains(body, "no KDC answered") {
		t.Errorf("a's /readyz with its KDC cut: %d %s", code, body)
	}
	before := served(pa)
	for i := 0; i < 10; i++ {
		if code, who := sync(); code != 200 || who != "alice" {
			t.Errorf("with a out of rotation: %d %s", code, who)
		}
	}
	if n := served(pa) - before; n != 0 {
		t.Errorf("a served %d requests out of rotation", n)
	}

	kdc.Restore()
	back := waitFor("a back in rotation after the link was restored", 20*time.Second, func(s map[string]string) bool {
		return s["a"] == "UP" && s["b"] == "UP"
	})
	t.Logf("a was back %v after the link was restored", back.Round(100*time.Millisecond))
	before = served(pa)
	for i := 0; i < 10; i++ {
		if code, who := sync(); code != 200 || who != "alice" {
			t.Errorf("after the restore: %d %s", code, who)
		}
	}
	if served(pa) == before {
		t.Error("a served nothing after it came back")
	}
}

// relay forwards TCP connections on listen to target until the test ends,
// and returns the address it listens on.
func relay(t *testing.T, listen, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { io.Copy(u, c); u.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, u)
			}()
		}
	}()
	return ln.Addr().String()
}
