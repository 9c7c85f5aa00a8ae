package psremote_test

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
	"github.com/segkcd/segkcd/internal/psremote"
	"github.com/segkcd/segkcd/internal/wsmantest"
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
	srv, err := wsmantest.StartWith(wsmantest.NewHost("cas1"), wsmantest.Options{User: adminUser, Password: adminPassword})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	rec := relay(t, srv.Addr())
	c, err := psremote.New(psremote.Config{Host: "127.0.0.1", Port: rec.port(), Auth: psremote.AuthNTLM,
		User: adminUser, Password: adminPassword, Timeout: 10 * time.Second})
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
	for _, clear := range []string{"Envelope", "EncodedCommand", psremote.EncodeCommand(groupScript)[:40], adminPassword, "powershell"} {
		if bytes.Contains(wire, []byte(clear)) {
			t.Fatalf("%q went over the wire in clear", clear)
		}
	}
	if !bytes.Contains(wire, []byte("Content-Type: "+psremote.EncryptedContentType)) {
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
	srv, err := wsmantest.StartWith(wsmantest.NewHost("cas1"), wsmantest.Options{User: adminUser, Password: adminPassword})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ctx := context.Background()
	c, _ := psremote.New(psremote.Config{Host: "127.0.0.1", Port: srv.Port(), Auth: psremote.AuthNTLM,
		User: adminUser, Password: "Wrong-pw-1", Timeout: 10 * time.Second})
	_, err = c.RunPowerShell(ctx, groupScript)
	if err == nil || !strings.Contains(err.Error(), "refused") || strings.Contains(err.Error(), "Wrong-pw-1") {
		t.Fatalf("wrong password: %v", err)
	}
	// Basic on plain HTTP is refused by a host without AllowUnencrypted.
	c, _ = psremote.New(psremote.Config{Host: "127.0.0.1", Port: srv.Port(), Auth: psremote.AuthBasic,
		User: adminUser, Password: adminPassword, AllowUnencrypted: true, Timeout: 10 * time.Second})
	var he *psremote.HTTPError
	if _, err := c.RunPowerShell(ctx, groupScript); !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized {
		t.Fatalf("Basic over HTTP on a host that refuses unencrypted traffic: %v", err)
	}
	// And psremote itself won't send Basic in clear unless told to.
	if _, err := psremote.New(psremote.Config{Host: "h", Auth: psremote.AuthBasic, User: "u", Password: "p"}); err == nil {
		t.Fatal("Basic over HTTP allowed by default")
	}
}

func startTLS(t *testing.T, o wsmantest.Options) (*wsmantest.Server, *wsmantest.PKI) {
	return wsmantest.StartTLSTest(t, wsmantest.NewHost("cas1"), o)
}

// NTLM on HTTPS: no sealing, and the logon is bound to the TLS channel;
// the host requires the binding here (CbtHardeningLevel Strict).
func TestNTLMOverHTTPSWithChannelBinding(t *testing.T) {
	srv, pki := startTLS(t, wsmantest.Options{User: adminUser, Password: adminPassword, RequireChannelBindings: true})
	c, err := psremote.New(psremote.Config{Host: "127.0.0.1", Port: srv.Port(), HTTPS: true, CACert: pki.CAPEM,
		Auth: psremote.AuthNTLM, User: adminUser, Password: adminPassword, Timeout: 10 * time.Second})
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
	srv, pki := startTLS(t, wsmantest.Options{CertificateUsers: map[string]string{"admin@corp.example": adminUser}})
	cert, key, err := pki.ClientCert("admin@corp.example")
	if err != nil {
		t.Fatal(err)
	}
	cfg := psremote.Config{Host: "127.0.0.1", Port: srv.Port(), HTTPS: true, CACert: pki.CAPEM,
		Auth: psremote.AuthCert, CertPEM: cert, KeyPEM: key, Timeout: 10 * time.Second}
	c, err := psremote.New(cfg)
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
	cfg.CertPEM, cfg.KeyPEM, _ = pki.ClientCert("mallory@corp.example")
	c, _ = psremote.New(cfg)
	var he *psremote.HTTPError
	if _, err := c.RunPowerShell(context.Background(), groupScript); !errors.As(err, &he) || he.StatusCode != 401 {
		t.Fatalf("unmapped certificate: %v", err)
	}
	// One from another CA fails the TLS handshake.
	other, _ := wsmantest.NewPKI()
	cfg.CertPEM, cfg.KeyPEM, _ = other.ClientCert("admin@corp.example")
	c, _ = psremote.New(cfg)
	if _, err := c.RunPowerShell(context.Background(), groupScript); err == nil {
		t.Fatal("certificate from an unknown CA accepted")
	}
	// Certificates need HTTPS.
	cfg.HTTPS = false
	if _, err := psremote.New(cfg); err == nil {
		t.Fatal("certificate auth over HTTP")
	}
}

// Basic works where the host allows unencrypted traffic and the client
// says so too (a lab host), and only there.
func TestBasicOnAHostThatAllowsIt(t *testing.T) {
	srv, err := wsmantest.Start(wsmantest.NewHost("cas1"), adminUser, adminPassword)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	c, err := psremote.New(psremote.Config{Host: "127.0.0.1", Port: srv.Port(), Auth: psremote.AuthBasic,
		User: adminUser, Password: adminPassword, AllowUnencrypted: true, Timeout: 10 * time.Second})
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
	c, _ := psremote.New(psremote.Config{Host: "127.0.0.1", Port: port, Auth: psremote.AuthNTLM, User: adminUser, Password: adminPassword})
	_, err := c.RunPowerShell(context.Background(), groupScript)
	if !errors.Is(err, psremote.ErrEncryption) || legs != 1 {
		t.Fatalf("after %d legs: %v", legs, err)
	}
}

// A long command: the host answers Receive with TimedOut faults until
// there is output, and the run still ends with it (over sealed NTLM, so the
// fault's text has to survive our transport's error).
func TestReceiveTimedOut(t *testing.T) {
	srv, err := wsmantest.StartWith(wsmantest.NewHost("cas1"), wsmantest.Options{User: adminUser, Password: adminPassword, ReceiveTimeouts: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	c, _ := psremote.New(srv.ClientConfig())
	out, err := c.RunPowerShell(context.Background(), groupScript)
	if err != nil || strings.TrimSpace(out) != groupOutput {
		t.Fatalf("%q %v", out, err)
	}
	if n := srv.Requests("Receive"); n != 4 {
		t.Fatalf("%d Receive requests, want 3 timed out and 1 answered", n)
	}
}
