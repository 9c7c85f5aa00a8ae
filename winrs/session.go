package winrs

import (
	"crypto/tls"
	"github.com/segkcd/segkcd/internal/wsman"

	"bytes"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/masterzen/winrm"
)

// logon authenticates a fresh connection. On HTTPS it may carry the first
// message too (done is true and out is its reply); on HTTP it leaves a
// Sealer in c.sealer.
type logon func(t *sessionTransport, c *sessionConn, body []byte) (out string, done bool, err error)

// sessionTransport posts SOAP messages on connections that are
// authenticated once, as NTLM (always) and Kerberos on plain HTTP
// (for sealing) need: each session owns one TCP connection (an
// http.Transport pinned to one conn) and idle sessions are pooled. On plain
// HTTP every message is sealed with the session's context.
type sessionTransport struct {
	logon logon
	ep    *winrm.Endpoint
	tc    *tls.Config // nil on plain HTTP
	url   string

	mu   sync.Mutex
	idle []*sessionConn
}

type sessionConn struct {
	hc     *http.Client
	authed bool
	sealer wsman.Sealer // on HTTP, once authenticated
}

// maxIdleSessions bounds the authenticated connections kept for reuse; a
// caller running more scripts at once than this logs on again for each.
const maxIdleSessions = 16

func (t *sessionTransport) Transport(ep *winrm.Endpoint) error {
	t.ep = ep
	hc, url := newHTTPClient(ep, t.tc, true)
	t.url = url
	t.idle = append(t.idle, &sessionConn{hc: hc})
	return nil
}

func (t *sessionTransport) encrypt() bool { return !t.ep.HTTPS }

// Post sends one SOAP message on an authenticated connection. A reply of
// 401 to a message on an established session means the server dropped
// the connection's context (idle timeout, restart): the message was not
// processed, so it is sent once more on a fresh session.
func (t *sessionTransport) Post(_ *winrm.Client, request *soapMessage) (string, error) {
	body := []byte(request.String())
	for attempt := 0; ; attempt++ {
		c := t.get()
		out, err := t.post(c, body)
		var he *HTTPError
		if errors.As(err, &he) && he.StatusCode == http.StatusUnauthorized && c.authed && attempt == 0 {
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
func (t *sessionTransport) post(c *sessionConn, body []byte) (string, error) {
	if !c.authed {
		out, done, err := t.logon(t, c, body)
		if err != nil {
			return "", err
		}
		c.authed = true
		if done {
			return out, nil
		}
		if t.encrypt() && c.sealer == nil {
			return "", fmt.Errorf("%w: the logon set up no context to seal with", ErrEncryption)
		}
	}
	req, err := t.request(c, body)
	if err != nil {
		return "", err
	}
	return t.do(c, req)
}

// request builds a POST of body on an authenticated session, sealed on HTTP.
//
// It is marked replayable (an Idempotency-Key that is not sent), so that
// net/http resends it on a new connection when the host closed the pooled
// one just as it was reused. That is safe here: the request carries no
// credential, so on a new connection the host answers 401 without running
// it, and Post logs on again.
func (t *sessionTransport) request(c *sessionConn, body []byte) (*http.Request, error) {
	var req *http.Request
	var err error
	if t.encrypt() {
		sealed, serr := wsman.SealMessage(c.sealer, body)
		if serr != nil {
			return nil, serr
		}
		if req, err = http.NewRequest(http.MethodPost, t.url, bytes.NewReader(sealed)); err == nil {
			req.Header.Set("Content-Type", wsman.EncryptedContentType)
		}
	} else {
		req, err = soapRequest(t.url, string(body))
	}
	if err != nil {
		return nil, err
	}
	req.Header["Idempotency-Key"] = nil
	return req, nil
}

// do sends a request on an authenticated session and unseals the reply.
func (t *sessionTransport) do(c *sessionConn, req *http.Request) (string, error) {
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
	if wsman.IsEncrypted(resp.Header.Get("Content-Type")) {
		if raw, err = wsman.UnsealMessage(c.sealer, raw); err != nil {
			return "", err
		}
	} else if t.encrypt() && len(raw) > 0 {
		return "", fmt.Errorf("%w: the host replied in clear to a sealed request (HTTP %d)", ErrEncryption, resp.StatusCode)
	}
	return replyBody(resp.StatusCode, raw)
}

// authPost sends one leg of a logon: body (nil for an empty POST) with the
// Authorization header, and returns the response and its body.
func (t *sessionTransport) authPost(c *sessionConn, authorization string, body []byte) (*http.Response, []byte, error) {
	var req *http.Request
	var err error
	if body == nil {
		req, err = http.NewRequest(http.MethodPost, t.url, http.NoBody)
	} else {
		req, err = soapRequest(t.url, string(body))
	}
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Authorization", authorization)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := readAll(resp.Body)
	return resp, raw, err
}

// finish ends a logon's last leg: on HTTP the leg was empty and must be
// 200; on HTTPS it carried the first message, whose reply is returned.
func (t *sessionTransport) finish(resp *http.Response, raw []byte) (string, bool, error) {
	if t.encrypt() {
		if resp.StatusCode != http.StatusOK {
			return "", false, &HTTPError{StatusCode: resp.StatusCode, Fault: faultReason(raw)}
		}
		return "", false, nil
	}
	out, err := replyBody(resp.StatusCode, raw)
	return out, true, err
}

func (t *sessionTransport) get() *sessionConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := len(t.idle); n > 0 {
		c := t.idle[n-1]
		t.idle = t.idle[:n-1]
		return c
	}
	hc, _ := newHTTPClient(t.ep, t.tc, true)
	return &sessionConn{hc: hc}
}

func (t *sessionTransport) dropIdle() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, c := range idle {
		c.hc.CloseIdleConnections()
	}
}

func (t *sessionTransport) put(c *sessionConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.idle) < maxIdleSessions {
		t.idle = append(t.idle, c)
		return
	}
	c.hc.CloseIdleConnections()
}
