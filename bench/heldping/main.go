// Command heldping measures what one held long poll costs a proxy, in one
// process: the proxy (the seg gateway's ProxyHandler, or
// httputil.ReverseProxy) behind TLS on loopback, a backend that holds each
// Ping, and the phones, each on a TLS connection of its own. With -answer
// begun the backend answers a Ping's first line at once and holds the rest
// (a streamed answer: the worst case for a proxy, which holds its copy
// buffer); with -answer quiet it says nothing until it answers, as
// Exchange answers a Ping when its heartbeat ends or something changed. It
// prints the heap in use, the live heap, the goroutines and the resident
// memory before and while holding, per held Ping, and writes a heap profile
// taken while holding.
//
//	go run ./bench/heldping -proxy seg -n 2000 -answer quiet -profile /tmp/seg.heap
//
// Tickets are made up (the backend does not check them): what a held
// request costs does not depend on the KDC, which bench/gateway measures.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/segkcd/segkcd/internal/testinfra/testpki"
	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/seg"
)

func main() {
	proxy := flag.String("proxy", "seg", "seg, revproxy, or direct (no proxy: what the phones and the backend cost, to subtract)")
	n := flag.Int("n", 2000, "held Pings")
	users := flag.Int("users", 0, "users (default n/10)")
	profile := flag.String("profile", "", "write a heap profile taken while holding")
	answer := flag.String("answer", "begun", "begun (the first line at once, the rest held) or quiet (nothing until the end)")
	flag.Parse()
	if *users <= 0 {
		*users = max(1, *n/10)
	}
	if *answer != "begun" && *answer != "quiet" {
		log.Fatalf("-answer %q: want begun or quiet", *answer)
	}
	if err := run(*proxy, *n, *users, *profile, *answer == "quiet"); err != nil {
		log.Fatal(err)
	}
}

func run(kind string, n, users int, profile string, quiet bool) error {
	ca, err := testpki.New("heldping CA")
	if err != nil {
		return err
	}
	srvCert, err := ca.Server()
	if err != nil {
		return err
	}
	// The backend: the first line at once (begun) or nothing (quiet),
	// then nothing until released.
	release := make(chan struct{})
	var pings atomic.Int64
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/vnd.ms-sync.wbxml")
		if quiet && r.URL.Query().Get("Cmd") == "Ping" {
			pings.Add(1)
		} else {
			io.WriteString(w, "held\n")
			w.(http.Flusher).Flush()
		}
		select {
		case <-release:
			if quiet {
				io.WriteString(w, "held\n")
			}
		case <-r.Context().Done():
		}
	}), TLSConfig: &tls.Config{Certificates: []tls.Certificate{srvCert.TLS}}}
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go backend.ServeTLS(bl, "", "")
	target, _ := url.Parse("https://" + bl.Addr().String())
	upstreamTLS := &tls.Config{RootCAs: ca.Pool}

	var h http.Handler
	base := ""
	switch kind {
	case "direct":
		base = target.String() + "/Microsoft-Server-ActiveSync"
	case "seg":
		h = &seg.ProxyHandler{
			Upstreams:    []*seg.Upstream{{URL: target, SPN: "HTTP/mail.example.test"}},
			Tickets:      fakeTickets{&sync.Map{}},
			Authenticate: userFromHeader,
			Transport:    &seg.UserPools{TLSClientConfig: upstreamTLS},
		}
	case "revproxy":
		rp := httputil.NewSingleHostReverseProxy(target)
		rp.Transport = &http.Transport{TLSClientConfig: upstreamTLS, MaxIdleConnsPerHost: 100}
		rp.FlushInterval = -1
		h = rp
	default:
		return fmt.Errorf("-proxy %q: want seg, revproxy or direct", kind)
	}
	if h != nil {
		front := seg.NewServer(h, &tls.Config{Certificates: []tls.Certificate{srvCert.TLS}})
		fl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		go front.ServeTLS(fl, "", "")
		base = "https://" + fl.Addr().String() + "/Microsoft-Server-ActiveSync"
	}

	// One request per user first, so that pools and tickets exist, as at
	// a site where every phone has synced before it holds a Ping.
	for u := 0; u < users; u++ {
		c := phone(ca)
		if err := ping(c, base, u, "Sync", false); err != nil {
			return err
		}
		c.CloseIdleConnections()
	}
	before := sample()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			if quiet {
				wg.Done() // the answer comes at the end
				ping(phone(ca), base, i%users, "Ping", true)
				return
			}
			defer wg.Done()
			errs <- ping(phone(ca), base, i%users, "Ping", true)
		}(i)
	}
	wg.Wait()
	for quiet && pings.Load() < int64(n) {
		time.Sleep(10 * time.Millisecond) // every Ping reached the backend
	}
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	time.Sleep(2 * time.Second) // let the servers settle into waiting
	holding := sample()
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return err
		}
		runtime.GC()
		pprof.WriteHeapProfile(f)
		f.Close()
	}
	per := func(a, b uint64) string { return fmt.Sprintf("%.1f KiB", float64(int64(b)-int64(a))/float64(n)/1024) }
	fmt.Printf("proxy %s, %d held Pings of %d users, in one process with the phones and the backend\n", kind, n, users)
	fmt.Printf("  per held Ping: heap and stacks %.0f B (stacks %.0f B), live heap and stacks %.0f B, goroutines %.2f\n",
		float64(int64(holding.heap)-int64(before.heap))/float64(n), float64(int64(holding.stacks)-int64(before.stacks))/float64(n),
		float64(int64(holding.live)-int64(before.live))/float64(n),
		float64(holding.goroutines-before.goroutines)/float64(n))
	fmt.Printf("  heap in use: %.1f MiB -> %.1f MiB, %s per held Ping\n", mib(before.heap), mib(holding.heap), per(before.heap, holding.heap))
	fmt.Printf("  goroutines: %d -> %d, %.2f per held Ping\n", before.goroutines, holding.goroutines,
		float64(holding.goroutines-before.goroutines)/float64(n))
	fmt.Printf("  RSS: %.1f MiB -> %.1f MiB, %s per held Ping\n", mib(before.rss), mib(holding.rss), per(before.rss, holding.rss))
	close(release)
	return nil
}

type memSample struct {
	heap, stacks, rss uint64
	live              uint64 // objects reachable after a collection, and stacks
	goroutines        int
}

func sample() memSample {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	s := memSample{heap: m.HeapInuse + m.StackInuse, stacks: m.StackInuse, live: m.HeapAlloc + m.StackInuse,
		goroutines: runtime.NumGoroutine()}
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		f := strings.Fields(string(b))
		if len(f) > 1 {
			pages, _ := strconv.ParseUint(f[1], 10, 64)
			s.rss = pages * uint64(os.Getpagesize())
		}
	}
	return s
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// phone is a device: a TLS connection of its own.
func phone(ca *testpki.CA) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, MaxConnsPerHost: 1}}
}

// ping sends a request and, for a held one, returns once its first line
// came (the body stays open: the request is held).
func ping(c *http.Client, base string, user int, cmd string, hold bool) error {
	u := "user" + strconv.Itoa(user)
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost,
		base+"?Cmd="+cmd+"&User="+u+"&DeviceId=D"+strconv.Itoa(user)+"X"+randHex()+"&DeviceType=Bench", strings.NewReader("<ping/>"))
	req.Header.Set("X-User", u)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || resp.StatusCode != 200 {
		return fmt.Errorf("%s: %d %v", cmd, resp.StatusCode, err)
	}
	if !hold {
		resp.Body.Close()
	}
	return nil
}

func randHex() string {
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func userFromHeader(r *http.Request) (*seg.Identity, error) {
	u := r.Header.Get("X-User")
	if u == "" {
		return nil, seg.ErrNoCredentials
	}
	// The bench has no directory: a SID made up from the name stands for
	// the account's, one per name as a directory's would be.
	h := fnv.New32a()
	h.Write([]byte(u))
	return &seg.Identity{User: u, SID: fmt.Sprintf("S-1-5-21-1-2-3-%d", h.Sum32()), Name: u, Method: "bench"}, nil
}

// fakeTickets makes up a ticket per user and keeps it, as a
// kerberos.Cache would; the backend does not check it.
type fakeTickets struct{ m *sync.Map }

func (f fakeTickets) AccountTicket(ctx context.Context, acct *kerberos.Account, spn string) (*kerberos.Ticket, error) {
	if t, ok := f.m.Load(acct.SID); ok {
		return t.(*kerberos.Ticket), nil
	}
	t := newTicket(acct.User, spn)
	f.m.Store(acct.SID, t)
	return t, nil
}

func newTicket(user, spn string) *kerberos.Ticket {
	key := make([]byte, 32)
	rand.Read(key)
	sname := types.PrincipalName{NameType: nametype.KRB_NT_SRV_INST, NameString: strings.SplitN(spn, "/", 2)}
	return &kerberos.Ticket{
		Ticket: messages.Ticket{TktVNO: 5, Realm: "EXAMPLE.TEST", SName: sname,
			EncPart: types.EncryptedData{EType: 18, KVNO: 1, Cipher: make([]byte, 1200)}},
		SessionKey: types.EncryptionKey{KeyType: 18, KeyValue: key},
		Client:     types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: []string{user}}, ClientRealm: "EXAMPLE.TEST",
		Server: sname, ServerRealm: "EXAMPLE.TEST",
		StartTime: time.Now(), EndTime: time.Now().Add(10 * time.Hour),
	}
}

func (fakeTickets) InvalidateAccount(sid, spn string) {}
