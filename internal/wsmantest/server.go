// Package wsmantest is a WS-Management (WinRM) server for tests. It speaks
// the real SOAP protocol of the Windows Remote Shell (create shell,
// command, receive, signal, delete) with Basic authentication, decodes
// the PowerShell that comes in as -EncodedCommand, and runs it against a
// model of a Windows host (Host).
//
// It models Windows; it is not Windows. It knows only the commands and the
// syntax that segkcd sends, and rejects anything else with an error, so that
// a test cannot pass on a script that a real host would refuse. No real
// Windows host or Exchange server is reachable where segkcd is tested.
package wsmantest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segkcd/segkcd/internal/psremote"
	"github.com/segkcd/segkcd/kerberos"
)

const (
	actionCreate  = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
	actionDelete  = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
	actionCommand = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command"
	actionReceive = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive"
	actionSignal  = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal"
	stateDone     = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"
)

// Server is one modeled Windows host behind a WinRM HTTP listener.
type Server struct {
	Host           *Host
	User, Password string

	ln   net.Listener
	srv  *http.Server
	mu   sync.Mutex
	cmds map[string]*result // command id -> output
	// Requests counts SOAP requests by action (the last path segment).
	requests map[string]int
	acceptor *kerberos.Acceptor
	krbUsers []string
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
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.krbUsers...)
}

// authorized checks Basic credentials or, when enabled, a Kerberos ticket.
func (s *Server) authorized(r *http.Request) bool {
	s.mu.Lock()
	acc := s.acceptor
	s.mu.Unlock()
	if h := r.Header.Get("Authorization"); acc != nil && strings.HasPrefix(h, "Negotiate ") {
		id, err := acc.Accept(h)
		if err != nil {
			return false
		}
		s.mu.Lock()
		s.krbUsers = append(s.krbUsers, id.User+"@"+id.Realm)
		s.mu.Unlock()
		return true
	}
	user, pw, ok := r.BasicAuth()
	return ok && subtle.ConstantTimeCompare([]byte(user), []byte(s.User)) == 1 &&
		subtle.ConstantTimeCompare([]byte(pw), []byte(s.Password)) == 1
}

type result struct {
	stdout, stderr string
	code           int
}

// Start listens on a free loopback port and accepts Basic authentication.
func Start(host *Host, user, password string) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{Host: host, User: user, Password: password, ln: ln, cmds: map[string]*result{}, requests: map[string]int{}}
	s.srv = &http.Server{Handler: s}
	go s.srv.Serve(ln)
	return s, nil
}

// ClientConfig is how psremote reaches this server: Basic over plain HTTP
// (AllowUnencrypted, which only a test host warrants).
func (s *Server) ClientConfig() psremote.Config {
	return psremote.Config{Host: "127.0.0.1", Port: s.Port(), Auth: psremote.AuthBasic, User: s.User,
		Password: s.Password, AllowUnencrypted: true, Timeout: 10 * time.Second}
}

// Addr is host:port of the listener.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Port is the listener's port.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Close stops the listener.
func (s *Server) Close() error { return s.srv.Close() }

// Requests returns how many requests of an action ("Command", "Receive", ...) came in.
func (s *Server) Requests(action string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[action]
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		w.Header().Add("WWW-Authenticate", "Negotiate")
		w.Header().Add("WWW-Authenticate", `Basic realm="WSMAN"`)
		http.Error(w, "", http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/wsman" {
		http.Error(w, "", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "", http.StatusBadRequest)
		return
	}
	req, err := parseEnvelope(body)
	if err != nil {
		s.fault(w, err.Error())
		return
	}
	s.mu.Lock()
	s.requests[req.action[strings.LastIndex(req.action, "/")+1:]]++
	s.mu.Unlock()
	switch req.action {
	case actionCreate:
		s.reply(w, `<x:ResourceCreated><a:Address>http://`+xmlEscape(r.Host)+`/wsman</a:Address><a:ReferenceParameters><w:ResourceURI>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd</w:ResourceURI><w:SelectorSet><w:Selector Name="ShellId">`+newID()+`</w:Selector></w:SelectorSet></a:ReferenceParameters></x:ResourceCreated>`)
	case actionCommand:
		id := newID()
		res := s.run(req.command)
		s.mu.Lock()
		s.cmds[id] = res
		s.mu.Unlock()
		s.reply(w, `<rsp:CommandResponse><rsp:CommandId>`+id+`</rsp:CommandId></rsp:CommandResponse>`)
	case actionReceive:
		s.mu.Lock()
		res, ok := s.cmds[req.commandID]
		delete(s.cmds, req.commandID)
		s.mu.Unlock()
		if !ok {
			s.fault(w, "unknown command id")
			return
		}
		var b strings.Builder
		b.WriteString(`<rsp:ReceiveResponse>`)
		for _, st := range []struct{ name, data string }{{"stdout", res.stdout}, {"stderr", res.stderr}} {
			if st.data != "" {
				fmt.Fprintf(&b, `<rsp:Stream Name="%s" CommandId="%s">%s</rsp:Stream>`, st.name, req.commandID, base64.StdEncoding.EncodeToString([]byte(st.data)))
			}
			fmt.Fprintf(&b, `<rsp:Stream Name="%s" CommandId="%s" End="true"></rsp:Stream>`, st.name, req.commandID)
		}
		fmt.Fprintf(&b, `<rsp:CommandState CommandId="%s" State="%s"><rsp:ExitCode>%d</rsp:ExitCode></rsp:CommandState></rsp:ReceiveResponse>`, req.commandID, stateDone, res.code)
		s.reply(w, b.String())
	case actionSignal:
		s.reply(w, `<rsp:SignalResponse/>`)
	case actionDelete:
		s.reply(w, ``)
	default:
		s.fault(w, "the test host does not model action "+req.action)
	}
}

// run executes one command line: powershell.exe ... -EncodedCommand <b64>.
func (s *Server) run(line string) *result {
	fields := strings.Fields(line)
	if len(fields) < 2 || !strings.EqualFold(fields[0], "powershell.exe") {
		return &result{stderr: "test host: only powershell.exe command lines are modeled: " + line, code: 1}
	}
	if len(line) > psremote.MaxCommandLine {
		// cmd.exe would cut it silently; the model refuses loudly.
		return &result{stderr: fmt.Sprintf("test host: command line of %d characters; cmd.exe truncates at %d", len(line), psremote.MaxCommandLine), code: 1}
	}
	for i, f := range fields {
		if strings.EqualFold(f, "-EncodedCommand") && i+1 < len(fields) {
			script, err := psremote.DecodeCommand(fields[i+1])
			if err != nil {
				return &result{stderr: "test host: bad -EncodedCommand: " + err.Error(), code: 1}
			}
			out, errOut, code := s.Host.Run(script)
			return &result{stdout: out, stderr: errOut, code: code}
		}
	}
	return &result{stderr: "test host: no -EncodedCommand in " + line, code: 1}
}

func (s *Server) reply(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "application/soap+xml;charset=UTF-8")
	fmt.Fprint(w, `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Header><a:MessageID>uuid:`+newID()+`</a:MessageID></s:Header><s:Body>`+body+`</s:Body></s:Envelope>`)
}

func (s *Server) fault(w http.ResponseWriter, reason string) {
	w.Header().Set("Content-Type", "application/soap+xml;charset=UTF-8")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprint(w, `<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><s:Fault><s:Code><s:Value>s:Receiver</s:Value></s:Code><s:Reason><s:Text xml:lang="en-US">`+xmlEscape(reason)+`</s:Text></s:Reason></s:Fault></s:Body></s:Envelope>`)
}

type envelope struct {
	action, shellID, commandID, command string
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
				if t.Name.Local == "Signal" && a.Name.Local == "CommandId" {
					e.commandID = a.Value
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
			case "Selector":
				if selector == "ShellId" {
					e.shellID = text
				}
			case "Command":
				e.command += string(t)
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

// StartTest starts a test host with a fixed Basic login for a test and
// closes it when the test ends.
func StartTest(t testing.TB, h *Host) *Server {
	t.Helper()
	s, err := Start(h, `CORP\admin`, "Adm1n-pw!")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
