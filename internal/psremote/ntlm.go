package psremote

import (
	"bytes"
	"crypto"
	_ "crypto/sha256" // the channel binding hashes
	_ "crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/masterzen/winrm"
	"github.com/segkcd/segkcd/internal/ntlm"
)

// ntlmTransport logs on with NTLMv2. NTLM authenticates a TCP connection,
// not a request, so each session owns one connection (its own
// http.Transport pinned to one conn); idle sessions are pooled. On plain
// HTTP every message is sealed with the session (MS-WSMV 2.2.9.1); on
// HTTPS the AUTHENTICATE message is bound to the server's certificate
// (channel binding, what IIS calls extended protection).
type ntlmTransport struct {
	user, domain, password string
	spn                    string
	ep                     *winrm.Endpoint
	url                    string

	mu   sync.Mutex
	idle []*ntlmConn
}

type ntlmConn struct {
	hc   *http.Client
	sess *ntlm.Session // nil until authenticated
}

func newNTLMTransport(user, password, spn string) *ntlmTransport {
	u, d := ntlm.SplitUser(user)
	return &ntlmTransport{user: u, domain: d, password: password, spn: spn}
}

func (t *ntlmTransport) Transport(ep *winrm.Endpoint) error {
	t.ep = ep
	_, url, err := newHTTPClient(ep, nil, true)
	t.url = url
	return err
}

// Post sends one SOAP message on an authenticated connection. A reply of
// 401 to a message on an established session means the server dropped
// the connection's context (idle timeout, restart): the message was not
// processed, so it is sent once more on a fresh session.
func (t *ntlmTransport) Post(_ *winrm.Client, request *soapMessage) (string, error) {
	body := []byte(request.String())
	for attempt := 0; ; attempt++ {
		c := t.get()
		out, err := t.post(c, body)
		var he *HTTPError
		if errors.As(err, &he) && he.StatusCode == http.StatusUnauthorized && c.sess != nil && attempt == 0 {
			// The other pooled sessions most likely died with this one.
			c.hc.CloseIdleConnections()
			t.dropIdle()
			continue
		}
		if err != nil {
			c.hc.CloseIdleConnections()
			return "", err
		}
		t.put(c)
		return out, nil
	}
}

// post authenticates c if needed, then sends body.
func (t *ntlmTransport) post(c *ntlmConn, body []byte) (string, error) {
	if c.sess == nil {
		out, done, err := t.authenticate(c, body)
		if err != nil || done {
			return out, err
		}
	}
	req, err := t.request(c, body)
	if err != nil {
		return "", err
	}
	return t.do(c, req)
}

func (t *ntlmTransport) encrypt() bool { return !t.ep.HTTPS }

// request builds a POST of body on an authenticated session, sealed on HTTP.
//
// It is marked replayable (an Idempotency-Key that is not sent), so that
// net/http resends it on a new connection when the host closed the pooled
// one just as it was reused. That is safe here: the request carries no
// credential, so on a new connection the host answers 401 without running
// it, and Post logs on again.
func (t *ntlmTransport) request(c *ntlmConn, body []byte) (req *http.Request, err error) {
	if !t.encrypt() {
		req, err = soapRequest(t.url, string(body))
	} else if req, err = http.NewRequest(http.MethodPost, t.url, bytes.NewReader(SealMessage(c.sess, body))); err == nil {
		req.Header.Set("Content-Type", EncryptedContentType)
	}
	if err != nil {
		return nil, err
	}
	req.Header["Idempotency-Key"] = nil
	return req, nil
}

// do sends a request on an authenticated session and unseals the reply.
func (t *ntlmTransport) do(c *ntlmConn, req *http.Request) (string, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, err := readAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return "", &HTTPError{StatusCode: resp.StatusCode}
	}
	if IsEncrypted(resp.Header.Get("Content-Type")) {
		if raw, err = UnsealMessage(c.sess, raw); err != nil {
			return "", err
		}
	} else if t.encrypt() && len(raw) > 0 {
		return "", fmt.Errorf("%w: the host replied in clear to a sealed request (HTTP %d)", ErrEncryption, resp.StatusCode)
	}
	return replyBody(resp.StatusCode, raw)
}

// authenticate runs NEGOTIATE / CHALLENGE / AUTHENTICATE on c's connection.
// On HTTPS the first message rides on the AUTHENTICATE leg (done is true
// and out is its reply); on HTTP that leg is empty, as the message must
// be sealed with the session it sets up.
func (t *ntlmTransport) authenticate(c *ntlmConn, body []byte) (out string, done bool, err error) {
	cl := &ntlm.Client{User: t.user, Domain: t.domain, Password: t.password, TargetName: t.spn}
	req, err := http.NewRequest(http.MethodPost, t.url, http.NoBody)
	if err != nil {
		return "", false, err
	}
	req.Header.Set("Authorization", "Negotiate "+base64.StdEncoding.EncodeToString(cl.Negotiate()))
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", false, err
	}
	readAll(resp.Body)
	resp.Body.Close()
	challenge, err := ntlmToken(resp)
	if err != nil {
		return "", false, err
	}
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		cl.ChannelBindings = TLSServerEndPoint(resp.TLS.PeerCertificates[0])
	}
	auth, sess, err := cl.Authenticate(challenge)
	if err != nil {
		return "", false, err
	}
	if t.encrypt() {
		req, err = http.NewRequest(http.MethodPost, t.url, http.NoBody)
	} else {
		req, err = soapRequest(t.url, string(body))
	}
	if err != nil {
		return "", false, err
	}
	req.Header.Set("Authorization", "Negotiate "+base64.StdEncoding.EncodeToString(auth))
	resp, err = c.hc.Do(req)
	if err != nil {
		return "", false, err
	}
	defer resp.Body.Close()
	raw, err := readAll(resp.Body)
	if err != nil {
		return "", false, err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return "", false, fmt.Errorf("psremote: NTLM logon as %s refused by the host (HTTP 401): wrong password, unknown user, or a channel binding the host rejects", t.who())
	}
	c.sess = sess
	if t.encrypt() {
		if resp.StatusCode != http.StatusOK {
			return "", false, &HTTPError{StatusCode: resp.StatusCode, Fault: faultReason(raw)}
		}
		return "", false, nil
	}
	out, err = replyBody(resp.StatusCode, raw)
	return out, true, err
}

func (t *ntlmTransport) who() string {
	if t.domain == "" {
		return t.user
	}
	return t.domain + `\` + t.user
}

// ntlmToken reads the CHALLENGE from a 401's WWW-Authenticate.
func ntlmToken(resp *http.Response) ([]byte, error) {
	for _, h := range resp.Header.Values("WWW-Authenticate") {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !(strings.EqualFold(scheme, "Negotiate") || strings.EqualFold(scheme, "NTLM")) {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(tok))
		if err != nil {
			return nil, fmt.Errorf("psremote: NTLM challenge is not base64")
		}
		return b, nil
	}
	return nil, fmt.Errorf("psremote: the host answered NTLM NEGOTIATE with HTTP %d and no challenge (is Negotiate enabled in WinRM's service auth?)", resp.StatusCode)
}

func (t *ntlmTransport) get() *ntlmConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := len(t.idle); n > 0 {
		c := t.idle[n-1]
		t.idle = t.idle[:n-1]
		return c
	}
	hc, _, _ := newHTTPClient(t.ep, nil, true) // the endpoint was checked in Transport
	return &ntlmConn{hc: hc}
}

// maxIdleSessions bounds the authenticated connections kept for reuse; a
// caller running more scripts at once than this logs on again for each.
const maxIdleSessions = 16

func (t *ntlmTransport) dropIdle() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, c := range idle {
		c.hc.CloseIdleConnections()
	}
}

func (t *ntlmTransport) put(c *ntlmConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.idle) < maxIdleSessions {
		t.idle = append(t.idle, c)
		return
	}
	c.hc.CloseIdleConnections()
}

// TLSServerEndPoint is the "tls-server-end-point" channel binding of a
// server certificate (RFC 5929 4.1): the certificate's hash with its
// signature's hash function, SHA-256 where that is MD5 or SHA-1.
func TLSServerEndPoint(cert *x509.Certificate) []byte {
	h := crypto.SHA256
	switch cert.SignatureAlgorithm {
	case x509.SHA384WithRSA, x509.ECDSAWithSHA384, x509.SHA384WithRSAPSS:
		h = crypto.SHA384
	case x509.SHA512WithRSA, x509.ECDSAWithSHA512, x509.SHA512WithRSAPSS:
		h = crypto.SHA512
	}
	d := h.New()
	d.Write(cert.Raw)
	return append([]byte("tls-server-end-point:"), d.Sum(nil)...)
}
