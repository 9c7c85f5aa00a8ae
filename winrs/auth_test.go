package winrs_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segkcd/segkcd/internal/ntlm"
	"github.com/segkcd/segkcd/internal/wsman"
	"github.com/segkcd/segkcd/winrs"
	"github.com/segkcd/segkcd/winrs/winrstest"
)

const (
	adminUser     = `CORP\admin`
	adminPassword = "Adm1n-pw!"
	groupScript   = "$ErrorActionPreference = 'Stop'\nGet-LocalGroupMember -Group 'IIS_IUSRS' | ForEach-Object -MemberName Name | ConvertTo-Json -Compress"
	groupOutput   = `"NT AUTHORITY\\IUSR"`
)

// recorder is a TCP relay that keeps every byte the client sent.
type recorder struct {
	ln  net.Listener
	mu  sync.Mutex
	buf bytes.Buffer
}

func relay(t *testing.T, target string) *recorder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go func() { io.Copy(c, s); c.Close() }()
			go func() {
				io.Copy(io.MultiWriter(s, writerFunc(func(p []byte) {
					r.mu.Lock()
					r.buf.Write(p)
					r.mu.Unlock()
				})), c)
				s.Close()
			}()
		}
	}()
	return r
}

type writerFunc func([]byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }

func (r *recorder) port() int { return r.ln.Addr().(*net.TCPAddr).Port }

func (r *recorder) sent() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.buf.Bytes()...)
}

// NTLM on plain HTTP: the host refuses anything in clear
// (AllowUnencrypted false), and every message goes sealed.
func TestNTLMSealedOverHTTP(t *testing.T) {
	srv, err := winrstest.StartWith(winrstest.NewHost("cas1"), winrstest.Options{User: adminUser, Password: adminPassword})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	rec := relay(t, srv.Addr())
	c, err := winrs.New(winrs.Config{Host: "127.0.0.1", Port: rec.port(), Auth: winrs.NTLM{User: adminUser, Password: adminPassword}, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	out, err := c.RunPowerShell(ctx, groupScript)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != groupOutput {
		t.Fatalf("stdout %q", out)
	}
	// Create, Command, Receive, Delete: all sealed, one logon.
	if srv.Sealed() != 4 || len(srv.Logons()) != 1 || srv.Logons()[0] != "ntlm:"+adminUser {
		t.Fatalf("sealed %d, logons %v", srv.Sealed(), srv.Logons())
	}
	// Nothing readable went over the wire: no SOAP, no script, no password.
	wire := rec.sent()
	for _, clear := range []string{"Envelope", "EncodedCommand", wsman.EncodeCommand(groupScript)[:40], adminPassword, "powershell"} {
		if bytes.Contains(wire, []byte(clear)) {
			t.Fatalf("%q went over the wire in clear", clear)
		}
	}
	if !bytes.Contains(wire, []byte("Content-Type: "+wsman.EncryptedContentType)) {
		t.Fatal("no sealed message on the wire")
	}

	// Concurrent runs share a small pool of authenticated connections.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := c.RunPowerShell(ctx, groupScript); err != nil || strings.TrimSpace(out) != groupOutput {
				errs <- errors.Join(err, errors.New(out))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := len(srv.Logons()); n < 2 || n > 9 {
		t.Fatalf("%d logons for 9 runs", n)
	}

	// The host drops its connections (idle timeout): the next run logs on again.
	before := len(srv.Logons())
	srv.DropConnections()
	if _, err := c.RunPowerShell(ctx, groupScript); err != nil {
		t.Fatalf("after the host dropped the connection: %v", err)
	}
	if len(srv.Logons()) <= before {
		t.Fatal("no new logon after the connection was dropped")
	}
}

func TestNTLMRefusals(t *testing.T) {
	srv, err := winrstest.StartWith(winrstest.NewHost("cas1"), winrstest.Options{User: adminUser, Password: adminPassword})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ctx := context.Background()
	c, _ := winrs.New(winrs.Config{Host: "127.0.0.1", Port: srv.Port(), Auth: winrs.NTLM{User: adminUser, Password: "Wrong-pw-1"}, Timeout: 10 * time.Second})
	_, err = c.RunPowerShell(ctx, groupScript)
	if err == nil || !strings.Contains(err.Error(), "refused") || strings.Contains(err.Error(), "Wrong-pw-1") {
		t.Fatalf("wrong password: %v", err)
	}
	var we *winrs.Error
	if !errors.Is(err, winrs.ErrUnauthorized) || errors.Is(err, winrs.ErrUnreachable) || !errors.As(err, &we) || we.Hint() == "" {
		t.Fatalf("wrong password is not ErrUnauthorized with a hint: %v", err)
	}
	// A host that is down is ErrUnreachable, not a refused logon.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	down := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	c, _ = winrs.New(winrs.Config{Host: "127.0.0.1", Port: down, Auth: winrs.NTLM{User: adminUser, Password: adminPassword}})
	if _, err := c.RunPowerShell(ctx, groupScript); !errors.Is(err, winrs.ErrUnreachable) || errors.Is(err, winrs.ErrUnauthorized) {
		t.Fatalf("host down: %v", err)
	}
	// Basic on plain HTTP is refused by a host without AllowUnencrypted.
	c, _ = winrs.New(winrs.Config{Host: "127.0.0.1", Port: srv.Port(), Auth: winrs.Basic{User: adminUser, Password: adminPassword}, AllowUnencrypted: true, Timeout: 10 * time.Second})
	var he *winrs.HTTPError
	if _, err := c.RunPowerShell(ctx, groupScript); !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized {
		t.Fatalf("Basic over HTTP on a host that refuses unencrypted traffic: %v", err)
	}
	// And winrs itself won't send Basic in clear unless told to.
	if _, err := winrs.New(winrs.Config{Host: "h", Auth: winrs.Basic{User: "u", Password: "p"}}); err == nil {
		t.Fatal("Basic over HTTP allowed by default")
	}
}

func startTLS(t *testing.T, o winrstest.Options) (*winrstest.Server, *winrstest.PKI) {
	return winrstest.StartTLSTest(t, winrstest.NewHost("cas1"), o)
}

// NTLM on HTTPS: no sealing, and the logon is bound to the TLS channel;
// the host requires the binding here (CbtHardeningLevel Strict).
func TestNTLMOverHTTPSWithChannelBinding(t *testing.T) {
	srv, pki := startTLS(t, winrstest.Options{User: adminUser, Password: adminPassword, RequireChannelBindings: true})
	c, err := winrs.New(winrs.Config{Host: "127.0.0.1", Port: srv.Port(), TLS: pki.ClientTLS(),
		Auth: winrs.NTLM{User: adminUser, Password: adminPassword}, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.RunPowerShell(context.Background(), groupScript)
	if err != nil || strings.TrimSpace(out) != groupOutput {
		t.Fatalf("%q %v", out, err)
	}
	if srv.Sealed() != 0 || len(srv.Logons()) != 1 {
		t.Fatalf("sealed %d logons %v", srv.Sealed(), srv.Logons())
	}
}

func TestCertificateLogon(t *testing.T) {
	srv, pki := startTLS(t, winrstest.Options{CertificateUsers: map[string]string{"admin@corp.example": adminUser}})
	cert, err := pki.ClientCert("admin@corp.example")
	if err != nil {
		t.Fatal(err)
	}
	cfg := winrs.Config{Host: "127.0.0.1", Port: srv.Port(), TLS: pki.ClientTLS(),
		Auth: winrs.Certificate{Certificate: cert}, Timeout: 10 * time.Second}
	c, err := winrs.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.RunPowerShell(context.Background(), groupScript)
	if err != nil || strings.TrimSpace(out) != groupOutput {
		t.Fatalf("%q %v", out, err)
	}
	if l := srv.Logons(); len(l) == 0 || l[0] != "certificate:"+adminUser {
		t.Fatalf("logons %v", l)
	}
	// A certificate whose UPN is not mapped is refused.
	cert, _ = pki.ClientCert("mallory@corp.example")
	cfg.Auth = winrs.Certificate{Certificate: cert}
	c, _ = winrs.New(cfg)
	var he *winrs.HTTPError
	if _, err := c.RunPowerShell(context.Background(), groupScript); !errors.As(err, &he) || he.StatusCode != 401 {
		t.Fatalf("unmapped certificate: %v", err)
	}
	// One from another CA fails the TLS handshake.
	other, _ := winrstest.NewPKI()
	cert, _ = other.ClientCert("admin@corp.example")
	cfg.Auth = winrs.Certificate{Certificate: cert}
	c, _ = winrs.New(cfg)
	if _, err := c.RunPowerShell(context.Background(), groupScript); err == nil {
		t.Fatal("certificate from an unknown CA accepted")
	}
	// Certificates need HTTPS.
	cfg.TLS = nil
	if _, err := winrs.New(cfg); err == nil {
		t.Fatal("certificate auth over HTTP")
	}
}

// Basic works where the host allows unencrypted traffic and the client
// says so too (a lab host), and only there.
func TestBasicOnAHostThatAllowsIt(t *testing.T) {
	srv, err := winrstest.Start(winrstest.NewHost("cas1"), adminUser, adminPassword)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	c, err := winrs.New(winrs.Config{Host: "127.0.0.1", Port: srv.Port(), Auth: winrs.Basic{User: adminUser, Password: adminPassword}, AllowUnencrypted: true, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.RunPowerShell(context.Background(), groupScript)
	if err != nil || strings.TrimSpace(out) != groupOutput {
		t.Fatalf("%q %v", out, err)
	}
	if l := srv.Logons(); len(l) != 4 || l[0] != "basic:"+adminUser || srv.Sealed() != 0 {
		t.Fatalf("logons %v sealed %d", l, srv.Sealed())
	}
}

// A host whose NTLM challenge leaves out sealing cannot take sealed
// messages: the client stops before it sends its AUTHENTICATE.
func TestNTLMWithoutSealingRefused(t *testing.T) {
	var legs int
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		legs++
		tok, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(r.Header.Get("Authorization"), "Negotiate "))
		_, ch, err := (&ntlm.Server{DomainName: "CORP", ComputerName: "CAS1",
			NTHash: func(string, string) ([]byte, bool) { return nil, false }}).Challenge(tok)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		binary.LittleEndian.PutUint32(ch[20:], binary.LittleEndian.Uint32(ch[20:])&^ntlm.FlagSeal)
		w.Header().Set("WWW-Authenticate", "Negotiate "+base64.StdEncoding.EncodeToString(ch))
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer hs.Close()
	port := hs.Listener.Addr().(*net.TCPAddr).Port
	c, _ := winrs.New(winrs.Config{Host: "127.0.0.1", Port: port, Auth: winrs.NTLM{User: adminUser, Password: adminPassword}})
	_, err := c.RunPowerShell(context.Background(), groupScript)
	if !errors.Is(err, winrs.ErrEncryption) || legs != 1 {
		t.Fatalf("after %d legs: %v", legs, err)
	}
}

// A long command: the host answers Receive with TimedOut faults until
// there is output, and the run still ends with it (over sealed NTLM, so the
// fault's text has to survive our transport's error).
func TestReceiveTimedOut(t *testing.T) {
	srv, err := winrstest.StartWith(winrstest.NewHost("cas1"), winrstest.Options{User: adminUser, Password: adminPassword, ReceiveTimeouts: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	c, _ := winrs.New(srv.ClientConfig())
	out, err := c.RunPowerShell(context.Background(), groupScript)
	if err != nil || strings.TrimSpace(out) != groupOutput {
		t.Fatalf("%q %v", out, err)
	}
	if n := srv.Requests("Receive"); n != 4 {
		t.Fatalf("%d Receive requests, want 3 timed out and 1 answered", n)
	}
}
