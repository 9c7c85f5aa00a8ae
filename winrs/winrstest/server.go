// Package winrstest is a WS-Management (WinRM) server for tests, what
// net/http/httptest is for net/http: a backend that embeds exchange or iis
// tests against it without Windows. It speaks
// the real SOAP protocol of the Windows Remote Shell (create shell,
// command, receive, signal, delete) over HTTP or HTTPS, with Basic, NTLM
// (with MS-WSMV message encryption on HTTP), Kerberos and client
// certificate logons, decodes
// the PowerShell that comes in as -EncodedCommand, and runs it against a
// model of a Windows host (Host).
//
// It models Windows; it is not Windows. It knows only the commands and the
// syntax that segkcd sends, and rejects anything else with an error, so that
// a test cannot pass on a script that a real host would refuse. No real
// Windows host or Exchange server is reachable where segkcd is tested.
package winrstest

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segkcd/segkcd/internal/ntlm"
	"github.com/segkcd/segkcd/internal/wsman"
	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/winrs"
)

const (
	actionCreate  = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
	actionDelete  = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
	actionCommand = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command"
	actionReceive = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive"
	actionSignal  = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal"
	actionSend    = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send"
	stateDone     = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"
)

// Server is one modeled Windows host behind a WinRM listener.
type Server struct {
	Host           *Host
	User, Password string // the local administrator, for Basic and NTLM

	opts   Options
	ln     net.Listener
	srv    *http.Server
	cert   *x509.Certificate // the listener's own, for NTLM channel binding
	mu     sync.Mutex
	cmds   map[string]*winrsCommand // command id -> command
	waits  map[string]int           // command id -> TimedOut faults sent
	shells map[string]bool          // open shells
	audit  []string                 // every process command line
	// Requests counts SOAP requests by action (the last path segment).
	requests map[string]int
	acceptor *kerberos.Acceptor
	logons   []string
	sealed   int
	conns    map[net.Conn]bool
}

// Options configure StartWith.
type Options struct {
	// User ("DOMAIN\\name") and Password log on with Basic or NTLM.
	User, Password string
	// TLS makes the listener HTTPS with these certificates. For
	// certificate logons, set ClientCAs and ClientAuth
	// (VerifyClientCertIfGiven), and CertificateUsers.
	TLS *tls.Config
	// AllowUnencrypted is the WinRM service setting of that name. Without
	// it, plain HTTP takes only messages sealed with an NTLM or Kerberos
	// context: Basic is refused, and so is any message in clear.
	AllowUnencrypted bool
	// CertificateUsers maps the UPN in a client certificate's subject
	// alternative name to the account it logs on as (the certmapping).
	CertificateUsers map[string]string
	// RequireChannelBindings refuses an NTLM logon over HTTPS that is not
	// bound to the TLS channel (CbtHardeningLevel Strict; the default,
	// Relaxed, refuses only a wrong binding).
	RequireChannelBindings bool
	// ReceiveTimeouts makes the first n Receive requests of every command
	// answer with WS-Management's TimedOut fault, as Windows does when a
	// command writes nothing for the request's OperationTimeout.
	ReceiveTimeouts int
}

// AcceptKerberos makes the server accept "Authorization: Negotiate" with
// Kerberos tickets validated by a (keytab holding the host's HTTP/ key).
func (s *Server) AcceptKerberos(a *kerberos.Acceptor) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acceptor = a
}

// KerberosUsers lists who authenticated with Kerberos, in order.
func (s *Server) KerberosUsers() []string {
	var out []string
	for _, l := range s.Logons() {
		if u, ok := strings.CutPrefix(l, "kerberos:"); ok {
			out = append(out, u)
		}
	}
	return out
}

// Logons lists every successful logon in order, as "method:user" with
// method basic, ntlm, kerberos or certificate. NTLM, and Kerberos with
// mutual authentication on plain HTTP, log on once per connection; the
// others once per request.
func (s *Server) Logons() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.logons...)
}

// Sealed counts the requests that came sealed (MS-WSMV message
// encryption with NTLM or Kerberos).
func (s *Server) Sealed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sealed
}

func (s *Server) logon(method, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logons = append(s.logons, method+":"+user)
}

type result struct {
	stdout, stderr string
	code           int
}

// Start listens on a free loopback port with plain HTTP and
// AllowUnencrypted (Basic works), as a lab host is often set up.
func Start(host *Host, user, password string) (*Server, error) {
	return StartWith(host, Options{User: user, Password: password, AllowUnencrypted: true})
}

// StartWith listens on a free loopback port as the options say.
func StartWith(host *Host, o Options) (*Server, error) {
	s := &Server{Host: host, User: o.User, Password: o.Password, opts: o, cmds: map[string]*winrsCommand{}, waits: map[string]int{}, shells: map[string]bool{},
		requests: map[string]int{}}
	if o.TLS != nil {
		if len(o.TLS.Certificates) == 0 {
			return nil, errors.New("winrstest: TLS without a certificate")
		}
		c, err := x509.ParseCertificate(o.TLS.Certificates[0].Certificate[0])
		if err != nil {
			return nil, err
		}
		s.cert = c
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.ln = ln
	s.conns = map[net.Conn]bool{}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0), // refused TLS handshakes are what some tests want
		ConnState: func(c net.Conn, st http.ConnState) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if st == http.StateClosed || st == http.StateHijacked {
				delete(s.conns, c)
			} else {
				s.conns[c] = true
			}
		},
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, &connState{})
		}}
	if o.TLS != nil {
		ln = tls.NewListener(ln, o.TLS)
	}
	go s.srv.Serve(ln)
	return s, nil
}

// connKey finds a connection's logon state: NTLM, and Kerberos for
// sealing, authenticate the TCP connection, and net/http serves one
// connection's requests in order on one goroutine, so the state needs no
// lock.
type connKey struct{}

type connState struct {
	pending *ntlm.Pending
	sealer  wsman.Sealer // the connection's NTLM or Kerberos context
}

// ClientConfig is how a winrs.Client reaches this server over plain HTTP: NTLM
// with every message sealed, which works whatever AllowUnencrypted says,
// as on a Windows host with WinRM's defaults.
func (s *Server) ClientConfig() winrs.Config {
	return winrs.Config{Host: "127.0.0.1", Port: s.Port(), Auth: winrs.NTLM{User: s.User, Password: s.Password},
		Timeout: 10 * time.Second}
}

// Addr is host:port of the listener.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Port is the listener's port.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// DropConnections closes every open connection, as a host does on an idle
// timeout or a restart; the logons bound to them are gone.
func (s *Server) DropConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
}

// Close stops the listener.
func (s *Server) Close() error { return s.srv.Close() }

// Requests returns how many requests of an action ("Command", "Receive", ...) came in.
func (s *Server) Requests(action string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[action]
}

func (s *Server) unauthorized(w http.ResponseWriter) {
	w.Header().Add("WWW-Authenticate", "Negotiate")
	if s.opts.AllowUnencrypted || s.cert != nil {
		w.Header().Add("WWW-Authenticate", `Basic realm="WSMAN"`)
	}
	w.WriteHeader(http.StatusUnauthorized)
}

// ntlmServer is the NTLM acceptor for the administrator account.
func (s *Server) ntlmServer(r *http.Request) *ntlm.Server {
	wantUser, wantDomain := ntlm.SplitUser(s.User)
	n := &ntlm.Server{DomainName: strings.ToUpper(wantDomain), ComputerName: strings.ToUpper(s.Host.Name),
		RequireChannelBindings: s.opts.RequireChannelBindings,
		NTHash: func(user, domain string) ([]byte, bool) {
			if strings.EqualFold(user, wantUser) && (domain == "" || strings.EqualFold(domain, wantDomain)) {
				return ntlm.NTHash(s.Password), true
			}
			return nil, false
		}}
	if r.TLS != nil && s.cert != nil {
		n.ChannelBindings = wsman.TLSServerEndPoint(s.cert)
	}
	return n
}

// authenticate checks the request's credential, or the connection's NTLM
// logon. It writes the reply itself and returns false when the request
// goes no further (a 401, or an NTLM leg).
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, st *connState) bool {
	h := r.Header.Get("Authorization")
	scheme, tok, _ := strings.Cut(h, " ")
	if raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(tok)); err == nil && len(raw) > 12 &&
		string(raw[:8]) == "NTLMSSP\x00" && (strings.EqualFold(scheme, "Negotiate") || strings.EqualFold(scheme, "NTLM")) {
		st.sealer = nil
		switch raw[8] {
		case 1:
			p, ch, err := s.ntlmServer(r).Challenge(raw)
			if err != nil {
				s.unauthorized(w)
				return false
			}
			st.pending = p
			w.Header().Set("WWW-Authenticate", scheme+" "+base64.StdEncoding.EncodeToString(ch))
			w.WriteHeader(http.StatusUnauthorized)
			return false
		case 3:
			if st.pending == nil {
				s.unauthorized(w)
				return false
			}
			id, sess, err := st.pending.Accept(raw)
			st.pending = nil
			if err != nil {
				s.unauthorized(w)
				return false
			}
			st.sealer = wsman.NTLMSealer(sess)
			who := id.User
			if id.Domain != "" {
				who = id.Domain + `\` + id.User
			}
			s.logon("ntlm", who)
			return true
		}
		s.unauthorized(w)
		return false
	}
	s.mu.Lock()
	acc := s.acceptor
	s.mu.Unlock()
	switch {
	case acc != nil && strings.EqualFold(scheme, "Negotiate"):
		// With mutual authentication the connection keeps the context, to
		// unseal what follows on plain HTTP.
		id, ctx, err := acc.AcceptContext(h)
		if err != nil {
			break
		}
		if id.ReplyHeader != "" {
			w.Header().Set("WWW-Authenticate", id.ReplyHeader)
		}
		st.sealer = nil
		if ctx != nil {
			st.sealer = ctx
		}
		s.logon("kerberos", id.User+"@"+id.Realm)
		return true
	case h == wsman.CertAuthHeader && r.TLS != nil && len(r.TLS.VerifiedChains) > 0:
		upn := certUPN(r.TLS.VerifiedChains[0][0])
		if user, ok := s.opts.CertificateUsers[strings.ToLower(upn)]; ok && upn != "" {
			s.logon("certificate", user)
			return true
		}
	case strings.EqualFold(scheme, "Basic"):
		if r.TLS == nil && !s.opts.AllowUnencrypted {
			break
		}
		user, pw, ok := r.BasicAuth()
		if ok && subtle.ConstantTimeCompare([]byte(user), []byte(s.User)) == 1 &&
			subtle.ConstantTimeCompare([]byte(pw), []byte(s.Password)) == 1 {
			s.logon("basic", user)
			return true
		}
	case h == "" && st.sealer != nil:
		return true // the connection's NTLM or Kerberos logon
	}
	s.unauthorized(w)
	return false
}

// ServeHTTP answers one WS-Management request: a logon leg, or a sealed
// or plain SOAP message for the shell.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st, _ := r.Context().Value(connKey{}).(*connState)
	if st == nil {
		st = &connState{}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "", http.StatusBadRequest)
		return
	}
	if !s.authenticate(w, r, st) {
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/wsman" {
		http.Error(w, "", http.StatusNotFound)
		return
	}
	sealed := wsman.IsEncrypted(r.Header.Get("Content-Type"))
	switch {
	case sealed && st.sealer == nil:
		http.Error(w, "", http.StatusBadRequest)
		return
	case sealed:
		if body, err = wsman.UnsealMessage(st.sealer, body); err != nil {
			// An NTLM session's RC4 stream is now out of step: drop it.
			st.sealer = nil
			http.Error(w, "", http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.sealed++
		s.mu.Unlock()
	case len(body) == 0:
		w.WriteHeader(http.StatusOK) // an authentication leg without a message
		return
	case r.TLS == nil && !s.opts.AllowUnencrypted:
		// As WinRM with AllowUnencrypted=false: a message in clear on HTTP.
		s.write(w, st, false, http.StatusBadRequest, faultXML("the WinRM service refused an unencrypted message (AllowUnencrypted is false)"))
		return
	}
	status, reply := s.handle(r, body)
	s.write(w, st, sealed, status, reply)
}

// write sends a SOAP reply, sealed when the request was.
func (s *Server) write(w http.ResponseWriter, st *connState, sealed bool, status int, reply string) {
	if sealed {
		b, err := wsman.SealMessage(st.sealer, []byte(reply))
		if err != nil {
			http.Error(w, "", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", wsman.EncryptedContentType)
		w.WriteHeader(status)
		w.Write(b)
		return
	}
	w.Header().Set("Content-Type", "application/soap+xml;charset=UTF-8")
	w.WriteHeader(status)
	io.WriteString(w, reply)
}

// handle runs one SOAP request and returns the status and reply envelope.
func (s *Server) handle(r *http.Request, body []byte) (int, string) {
	req, err := parseEnvelope(body)
	if err != nil {
		return http.StatusInternalServerError, faultXML(err.Error())
	}
	s.mu.Lock()
	s.requests[req.action[strings.LastIndex(req.action, "/")+1:]]++
	s.mu.Unlock()
	switch req.action {
	case actionCreate:
		id := newID()
		s.mu.Lock()
		s.shells[id] = true
		s.mu.Unlock()
		return http.StatusOK, replyXML(req, `<x:ResourceCreated><a:Address>http://`+xmlEscape(r.Host)+`/wsman</a:Address><a:ReferenceParameters><w:ResourceURI>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd</w:ResourceURI><w:SelectorSet><w:Selector Name="ShellId">`+id+`</w:Selector></w:SelectorSet></a:ReferenceParameters></x:ResourceCreated>`)
	case actionCommand:
		id := newID()
		s.mu.Lock()
		if !s.shells[req.shellID] {
			s.mu.Unlock()
			return http.StatusInternalServerError, faultXML("unknown shell")
		}
		// The process starts now: auditing records its command line.
		s.audit = append(s.audit, req.command)
		s.cmds[id] = &winrsCommand{shell: req.shellID, line: req.command, stop: make(chan struct{}), done: make(chan struct{})}
		s.mu.Unlock()
		return http.StatusOK, replyXML(req, `<rsp:CommandResponse><rsp:CommandId>`+id+`</rsp:CommandId></rsp:CommandResponse>`)
	case actionSend:
		if msg, ok := s.send(req); !ok {
			return http.StatusInternalServerError, faultXML(msg)
		}
		return http.StatusOK, replyXML(req, `<rsp:SendResponse/>`)
	case actionReceive:
		s.mu.Lock()
		if _, ok := s.cmds[req.commandID]; ok && s.waits[req.commandID] < s.opts.ReceiveTimeouts {
			s.waits[req.commandID]++
			s.mu.Unlock()
			return http.StatusInternalServerError, timedOutXML
		}
		s.mu.Unlock()
		res, ok := s.receive(req.commandID)
		if !ok {
			return http.StatusInternalServerError, faultXML("unknown command id")
		}
		if res == nil {
			return http.StatusInternalServerError, timedOutXML
		}
		s.mu.Lock()
		delete(s.waits, req.commandID)
		s.mu.Unlock()
		var b strings.Builder
		b.WriteString(`<rsp:ReceiveResponse>`)
		for _, st := range []struct{ name, data string }{{"stdout", res.stdout}, {"stderr", res.stderr}} {
			if st.data != "" {
				fmt.Fprintf(&b, `<rsp:Stream Name="%s" CommandId="%s">%s</rsp:Stream>`, st.name, req.commandID, base64.StdEncoding.EncodeToString([]byte(st.data)))
			}
			fmt.Fprintf(&b, `<rsp:Stream Name="%s" CommandId="%s" End="true"></rsp:Stream>`, st.name, req.commandID)
		}
		fmt.Fprintf(&b, `<rsp:CommandState CommandId="%s" State="%s"><rsp:ExitCode>%d</rsp:ExitCode></rsp:CommandState></rsp:ReceiveResponse>`, req.commandID, stateDone, res.code)
		return http.StatusOK, replyXML(req, b.String())
	case actionSignal:
		s.mu.Lock()
		if c, ok := s.cmds[req.commandID]; ok {
			s.stopLocked(c)
			delete(s.cmds, req.commandID)
		}
		s.mu.Unlock()
		return http.StatusOK, replyXML(req, `<rsp:SignalResponse/>`)
	case actionDelete:
		s.deleteShell(req.shellID)
		return http.StatusOK, replyXML(req, ``)
	default:
		return http.StatusInternalServerError, faultXML("the test host does not model action " + req.action)
	}
}

// run executes one command line: powershell.exe ... -EncodedCommand <b64>,
// with the lines of its standard input.
func (s *Server) run(line string, stdin []string, stop <-chan struct{}) *result {
	fields := strings.Fields(line)
	if len(fields) < 2 || !(strings.EqualFold(fields[0], "powershell.exe") || strings.EqualFold(fields[0], "powershell")) {
		return &result{stderr: "test host: only powershell.exe command lines are modeled: " + line, code: 1}
	}
	if len(line) > wsman.MaxCommandLine {
		// cmd.exe would cut it silently; the model refuses loudly.
		return &result{stderr: fmt.Sprintf("test host: command line of %d characters; cmd.exe truncates at %d", len(line), wsman.MaxCommandLine), code: 1}
	}
	for i, f := range fields {
		if strings.EqualFold(f, "-EncodedCommand") && i+1 < len(fields) {
			script, err := wsman.DecodeCommand(fields[i+1])
			if err != nil {
				return &result{stderr: "test host: bad -EncodedCommand: " + err.Error(), code: 1}
			}
			out, errOut, code := s.Host.run(script, stdin, stop)
			return &result{stdout: out, stderr: errOut, code: code}
		}
	}
	return &result{stderr: "test host: no -EncodedCommand in " + line, code: 1}
}

// replyXML wraps a response body in an envelope whose header answers req:
// the response Action and RelatesTo with the request's MessageID (pywinrm
// checks it; Windows always sends it).
func replyXML(req envelope, body string) string {
	return `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Header><a:Action>` +
		xmlEscape(req.action) + `Response</a:Action><a:MessageID>uuid:` + newID() + `</a:MessageID><a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To><a:RelatesTo>` +
		xmlEscape(req.messageID) + `</a:RelatesTo></s:Header><s:Body>` + body + `</s:Body></s:Envelope>`
}

// timedOutXML is Windows' fault for a Receive that waited OperationTimeout
// without output.
const timedOutXML = `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"><s:Body><s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:TimedOut</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="">The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  </s:Text></s:Reason><s:Detail><f:WSManFault Code="2150858793" Machine="localhost"><f:Message>The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  </f:Message></f:WSManFault></s:Detail></s:Fault></s:Body></s:Envelope>`

func faultXML(reason string) string {
	return `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><s:Fault><s:Code><s:Value>s:Receiver</s:Value></s:Code><s:Reason><s:Text xml:lang="en-US">` + xmlEscape(reason) + `</s:Text></s:Reason></s:Fault></s:Body></s:Envelope>`
}

type envelope struct {
	action, messageID, shellID, commandID, command string
	stdin                                          string // base64 of a Send's stdin stream
	stdinEnd                                       bool
}

// parseEnvelope reads the fields the shell protocol needs from a request.
func parseEnvelope(b []byte) (envelope, error) {
	var e envelope
	dec := xml.NewDecoder(strings.NewReader(string(b)))
	var path []string
	var selector string
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return e, fmt.Errorf("malformed SOAP: %v", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			path = append(path, t.Name.Local)
			selector = ""
			for _, a := range t.Attr {
				if t.Name.Local == "Selector" && a.Name.Local == "Name" {
					selector = a.Value
				}
				if t.Name.Local == "DesiredStream" && a.Name.Local == "CommandId" {
					e.commandID = a.Value
				}
				if (t.Name.Local == "Signal" || t.Name.Local == "Stream") && a.Name.Local == "CommandId" {
					e.commandID = a.Value
				}
				if t.Name.Local == "Stream" && a.Name.Local == "End" && a.Value == "true" {
					e.stdinEnd = true
				}
			}
		case xml.EndElement:
			path = path[:len(path)-1]
		case xml.CharData:
			if len(path) == 0 {
				continue
			}
			text := strings.TrimSpace(string(t))
			switch path[len(path)-1] {
			case "Action":
				e.action = text
			case "MessageID":
				e.messageID = text
			case "Selector":
				if selector == "ShellId" {
					e.shellID = text
				}
			case "Command":
				e.command += string(t)
			case "Stream":
				e.stdin += string(t)
			}
		}
	}
	if e.action == "" {
		return e, fmt.Errorf("no WS-Addressing Action")
	}
	return e, nil
}

func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	h := strings.ToUpper(hex.EncodeToString(b))
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func xmlEscape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// StartTest starts a test host for a test, with a fixed administrator
// login and WinRM's defaults (AllowUnencrypted false: only sealed
// messages on plain HTTP), and closes it when the test ends.
func StartTest(t testing.TB, h *Host) *Server {
	t.Helper()
	s, err := StartWith(h, Options{User: `CORP\admin`, Password: "Adm1n-pw!"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// StartTLSTest starts an HTTPS test host with a new PKI (whose ServerTLS
// also asks for client certificates) for a test, and closes it when the
// test ends.
func StartTLSTest(t testing.TB, h *Host, o Options) (*Server, *PKI) {
	t.Helper()
	pki, err := NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	if o.TLS, err = pki.ServerTLS(); err != nil {
		t.Fatal(err)
	}
	s, err := StartWith(h, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, pki
}
