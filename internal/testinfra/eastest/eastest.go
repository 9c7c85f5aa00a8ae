// Package eastest is an Exchange ActiveSync stand-in for tests and
// benchmarks of the gateway: an HTTPS server that accepts "Authorization:
// Negotiate" with the ASA's keytab (kerberos.Acceptor) and answers with the
// user it authenticated. It is not Exchange: it speaks no WBXML and keeps no
// mailbox. What it does model is the part of IIS the gateway must get right:
// Kerberos authentication is bound to the TCP connection, so a later request
// on an authenticated connection, even one without an Authorization header,
// is served as that connection's user.
//
// Users must not import this package: it is test plumbing.
package eastest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jcmturner/gokrb5/v8/spnego"

	"github.com/segkcd/segkcd/kerberos"
)

// Headers of the stand-in's answers and of requests that steer it.
const (
	// UserHeader carries the user the request was served as.
	UserHeader = "X-Eastest-User"
	// SPNHeader carries the server name of the ticket the request came
	// with (the ticket's sname, which travels in clear).
	SPNHeader = "X-Eastest-SPN"
	// HowHeader says how: "ticket" (a Negotiate header on this request) or
	// "connection" (the connection's earlier authentication, as IIS does).
	HowHeader = "X-Eastest-How"
	// HoldHeader, on a request, makes the stand-in answer its headers at
	// once and then hold the body open for this long (a Go duration): a
	// long poll.
	HoldHeader = "X-Eastest-Hold"
	// WaitHeader, on a request, makes the stand-in wait this long (a Go
	// duration) before it answers at all, then answer whole: a long poll
	// as Exchange answers a Ping, when its heartbeat ends or something
	// changed.
	WaitHeader = "X-Eastest-Wait"
)

// Server is the stand-in. Its handler answers 200 with "user\n" in the body
// (and, for a request with a body, the body's length and SHA-256), or 401
// with "WWW-Authenticate: Negotiate" when the request has no valid ticket
// and its connection is not authenticated.
type Server struct {
	*httptest.Server
	Acceptor *kerberos.Acceptor

	requests  atomic.Int64
	accepted  atomic.Int64
	cancelled atomic.Int64
	mixed     atomic.Int64
	leaked    atomic.Int64
	unbound   atomic.Int64
	reject    atomic.Int64
	held      chan string
	tokens    []string
	redirect  map[string]string // upper-cased user -> X-MS-Location
	mu        sync.Mutex
	conns     map[*connState]struct{}
	early     []EarlyEnd
}

// EarlyEnd is a held request whose client went away before its hold ended.
type EarlyEnd struct {
	At     time.Time     `json:"at"`
	User   string        `json:"user"`
	Remote string        `json:"remote"` // the client's address
	Held   time.Duration `json:"held"`   // how long it was held
	Asked  time.Duration `json:"asked"`  // the hold it asked for
}

// EarlyEnds returns the first 1,000 held requests that ended before their
// hold, for a benchmark that explains each one.
func (s *Server) EarlyEnds() []EarlyEnd {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]EarlyEnd(nil), s.early...)
}

type connState struct {
	mu    sync.Mutex
	user  string
	users map[string]bool
}

type connKey struct{}

// NewServer starts a TLS stand-in (httptest's certificate for 127.0.0.1).
//
// Extended Protection: an acc with TokenChecking (Allow or Require, as
// IIS's tokenChecking) and no ChannelBinding checks each token's binding
// against the stand-in's own certificate (RFC 5929 tls-server-end-point),
// as IIS does against the site's; the stand-in works on a copy of acc.
func NewServer(acc *kerberos.Acceptor) *Server {
	s := newServer(acc)
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.Server.Config.ConnContext = s.connContext
	s.Server.StartTLS()
	s.bindTo(s.Server.Certificate())
	return s
}

// Serve runs a stand-in on ln with tlsConf until the listener fails: for
// programs (the demo) rather than tests. Extended Protection is as for
// NewServer, against tlsConf's first certificate.
func Serve(ln net.Listener, acc *kerberos.Acceptor, tlsConf *tls.Config) error {
	s := newServer(acc)
	s.bindTo(firstCertificate(tlsConf))
	return s.httpServer(tlsConf).ServeTLS(ln, "", "")
}

// Listen serves a stand-in on ln with tlsConf in the background and
// returns it, for programs that read its counts (the soak benchmark). Its
// Server field (httptest's) is nil. Extended Protection is as for Serve.
func Listen(ln net.Listener, acc *kerberos.Acceptor, tlsConf *tls.Config) *Server {
	s := newServer(acc)
	s.bindTo(firstCertificate(tlsConf))
	go s.httpServer(tlsConf).ServeTLS(ln, "", "")
	return s
}

// bindTo gives the acceptor, when it checks tokens' channel bindings and
// was given none, the binding of the stand-in's certificate.
func (s *Server) bindTo(cert *x509.Certificate) {
	if s.Acceptor == nil || s.Acceptor.TokenChecking == kerberos.TokenCheckingNone || s.Acceptor.ChannelBinding != nil || cert == nil {
		return
	}
	acc := *s.Acceptor
	acc.ChannelBinding, _ = kerberos.TLSServerEndPoint(cert) // none: every bound token is refused, as IIS would
	s.Acceptor = &acc
}

// firstCertificate is the leaf of tlsConf's first certificate.
func firstCertificate(tlsConf *tls.Config) *x509.Certificate {
	if tlsConf == nil || len(tlsConf.Certificates) == 0 || len(tlsConf.Certificates[0].Certificate) == 0 {
		return nil
	}
	c, err := x509.ParseCertificate(tlsConf.Certificates[0].Certificate[0])
	if err != nil {
		return nil
	}
	return c
}

func (s *Server) httpServer(tlsConf *tls.Config) *http.Server {
	return &http.Server{Handler: http.HandlerFunc(s.serve), ConnContext: s.connContext, TLSConfig: tlsConf,
		ReadHeaderTimeout: 30 * time.Second}
}

func newServer(acc *kerberos.Acceptor) *Server {
	return &Server{Acceptor: acc, held: make(chan string, 1024), conns: map[*connState]struct{}{}, redirect: map[string]string{}}
}

// connContext gives each connection its authentication state, as IIS keeps
// it per TCP connection.
func (s *Server) connContext(ctx context.Context, c net.Conn) context.Context {
	st := &connState{users: map[string]bool{}}
	s.mu.Lock()
	s.conns[st] = struct{}{}
	s.mu.Unlock()
	return context.WithValue(ctx, connKey{}, st)
}

// Stats counts what the stand-in saw.
type Stats struct {
	Requests  int64 // every request
	Accepted  int64 // requests with a Negotiate header that the Acceptor took
	Cancelled int64 // held requests whose client went away first
	// Mixed counts connections that carried more than one user: an identity
	// isolation failure of whoever sent them.
	Mixed int64
	// DeviceCredentials counts requests that arrived with credentials meant
	// for the gateway: Proxy-Authorization, or an Authorization that is not
	// Negotiate.
	DeviceCredentials int64
	// UnboundRefused counts tokens refused for their channel binding (none,
	// or another connection's) under the acceptor's TokenChecking.
	UnboundRefused int64
}

// Stats reports the counts so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	mixed := int64(0)
	for c := range s.conns {
		c.mu.Lock()
		if len(c.users) > 1 {
			mixed++
		}
		c.mu.Unlock()
	}
	s.mu.Unlock()
	return Stats{Requests: s.requests.Load(), Accepted: s.accepted.Load(), Cancelled: s.cancelled.Load(), Mixed: mixed,
		DeviceCredentials: s.leaked.Load(), UnboundRefused: s.unbound.Load()}
}

// Tokens returns the Negotiate tokens received (the first 4096), for tests
// that look for them where they must not be.
func (s *Server) Tokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.tokens...)
}

// RejectNext makes the next n requests that carry a ticket get 401, as IIS
// answers a ticket encrypted with a key it no longer has (after an ASA roll).
func (s *Server) RejectNext(n int) { s.reject.Store(int64(n)) }

// Redirect makes the stand-in answer 451 with X-MS-Location: location to
// user's requests (the ticket's client name exactly: Exchange reads the
// PAC's SID, and a stand-in that folded names would join two accounts),
// as Exchange does for a mailbox on another server (an
// empty location stops it).
func (s *Server) Redirect(user, location string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if location == "" {
		delete(s.redirect, user)
		return
	}
	s.redirect[user] = location
}

// ticketSPN reads the server name of the ticket inside a Negotiate header.
func ticketSPN(auth string) string {
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(auth, "Negotiate "))
	if err != nil {
		return ""
	}
	var st spnego.SPNEGOToken
	if st.Unmarshal(b) != nil || !st.Init {
		return ""
	}
	var k spnego.KRB5Token
	if k.Unmarshal(st.NegTokenInit.MechTokenBytes) != nil {
		return ""
	}
	return k.APReq.Ticket.SName.PrincipalNameString()
}

// Held delivers the user of each request that starts holding (HoldHeader).
func (s *Server) Held() <-chan string { return s.held }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if a := r.Header.Get("Authorization"); r.Header.Get("Proxy-Authorization") != "" || (a != "" && !strings.HasPrefix(a, "Negotiate ")) {
		s.leaked.Add(1)
	}
	st, _ := r.Context().Value(connKey{}).(*connState)
	route := ""
	switch p := strings.ToLower(r.URL.Path); {
	case strings.TrimSuffix(p, "/") == "/microsoft-server-activesync":
		route = "eas"
	case p == "/autodiscover/autodiscover.xml":
		route = "autodiscover"
	case strings.HasPrefix(p, "/ews/"):
		route = "ews"
	default:
		http.NotFound(w, r)
		return
	}
	user, how := "", ""
	if auth := r.Header.Get("Authorization"); auth != "" {
		if s.reject.Add(-1) >= 0 {
			w.Header().Set("WWW-Authenticate", "Negotiate")
			http.Error(w, "ticket refused", http.StatusUnauthorized)
			return
		}
		s.mu.Lock()
		if len(s.tokens) < 4096 {
			s.tokens = append(s.tokens, strings.TrimPrefix(auth, "Negotiate "))
		}
		s.mu.Unlock()
		id, err := s.Acceptor.Accept(auth)
		if errors.Is(err, kerberos.ErrChannelBinding) {
			s.unbound.Add(1)
		}
		if err != nil {
			w.Header().Set("WWW-Authenticate", "Negotiate")
			http.Error(w, "bad ticket", http.StatusUnauthorized)
			return
		}
		s.accepted.Add(1)
		// As IIS does, the user is the account the PAC names (the logon
		// token's), not the ticket's client name: after an S4U2Self by UPN
		// that is an enterprise name, alice@corp.example.test.
		user, how = id.User, "ticket"
		if id.Account != "" {
			user = id.Account
		}
		w.Header().Set(SPNHeader, ticketSPN(auth))
		if st != nil {
			st.mu.Lock()
			st.user = user
			st.users[strings.ToLower(user)] = true
			st.mu.Unlock()
		}
	} else if st != nil {
		st.mu.Lock()
		user, how = st.user, "connection"
		st.mu.Unlock()
	}
	if user == "" {
		w.Header().Set("WWW-Authenticate", "Negotiate")
		http.Error(w, "no ticket", http.StatusUnauthorized)
		return
	}
	s.mu.Lock()
	loc := s.redirect[user]
	s.mu.Unlock()
	if loc != "" {
		w.Header().Set("X-MS-Location", loc)
		w.WriteHeader(451)
		return
	}
	w.Header().Set(UserHeader, user)
	w.Header().Set(HowHeader, how)
	switch route {
	case "autodiscover":
		// The MobileSync answer of MS-ASCMD's Autodiscover, naming this
		// server; a gateway must put its own URL there.
		w.Header().Set("Content-Type", "text/xml; charset=utf-8")
		fmt.Fprintf(w, autodiscoverAnswer, user, "https://"+r.Host+"/Microsoft-Server-ActiveSync")
		return
	case "ews":
		w.Header().Set("Content-Type", "text/xml; charset=utf-8")
		fmt.Fprintf(w, "<ews user=%q/>\n", user)
		return
	}
	if r.Method == http.MethodOptions {
		w.Header().Set("MS-ASProtocolVersions", "2.5,12.0,12.1,14.0,14.1,16.0,16.1")
		w.Header().Set("MS-ASProtocolCommands", "Sync,SendMail,FolderSync,Ping,Provision")
		return
	}
	if d, err := time.ParseDuration(r.Header.Get(HoldHeader)); err == nil && d > 0 {
		s.hold(w, r, user, d)
		return
	}
	if d, err := time.ParseDuration(r.Header.Get(WaitHeader)); err == nil && d > 0 && !s.wait(r, user, d) {
		return
	}
	fmt.Fprintf(w, "%s\n", user)
	if r.ContentLength != 0 {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		fmt.Fprintf(w, "%d %s\n", n, hex.EncodeToString(h.Sum(nil)))
	}
}

const autodiscoverAnswer = `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">
  <Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006">
    <Culture>en:us</Culture>
    <User><DisplayName>%s</DisplayName></User>
    <Action><Settings><Server><Type>MobileSync</Type><Url>%[2]s</Url><Name>%[2]s</Name></Server></Settings></Action>
  </Response>
</Autodiscover>
`

// wait waits d before the answer, and reports whether the client is still
// there for it.
func (s *Server) wait(r *http.Request, user string, d time.Duration) bool {
	// The body is read first, as IIS reads it: the server notices a
	// client that goes away only once it has.
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	return s.await(r, user, d)
}

// await holds r for d and reports whether its client is still there.
func (s *Server) await(r *http.Request, user string, d time.Duration) bool {
	select {
	case s.held <- user:
	default:
	}
	start := time.Now()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		s.ended(r, user, start, d)
		return false
	}
}

// hold answers at once, then keeps the body open: the headers and the first
// line must reach the device before the hold ends.
func (s *Server) hold(w http.ResponseWriter, r *http.Request, user string, d time.Duration) {
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "%s\n", user)
	http.NewResponseController(w).Flush()
	if s.await(r, user, d) {
		fmt.Fprintf(w, "done\n")
	}
}

// ended counts a held request whose client went away first.
func (s *Server) ended(r *http.Request, user string, start time.Time, d time.Duration) {
	s.cancelled.Add(1)
	s.mu.Lock()
	if len(s.early) < 1000 {
		s.early = append(s.early, EarlyEnd{At: time.Now(), User: user, Remote: r.RemoteAddr, Held: time.Since(start), Asked: d})
	}
	s.mu.Unlock()
}
