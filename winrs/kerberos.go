package winrs

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/masterzen/winrm"
	"github.com/masterzen/winrm/soap"

	"github.com/segkcd/segkcd/kerberos"
)

type soapMessage = soap.SoapMessage

// ticketTimeout bounds the TGS exchange for the host's ticket: the
// transport's Post carries no context.
const ticketTimeout = 30 * time.Second

// hostTicket keeps the service ticket for the host, fetched again a minute
// before it ends: one TGS exchange per ticket lifetime, not per request.
type hostTicket struct {
	cl  *kerberos.Client
	spn string

	mu sync.Mutex
	t  *kerberos.Ticket
}

func (h *hostTicket) get() (*kerberos.Ticket, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.t != nil && time.Now().Add(time.Minute).Before(h.t.EndTime) {
		return h.t, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), ticketTimeout)
	defer cancel()
	t, err := h.cl.ServiceTicket(ctx, h.spn)
	if err != nil {
		return nil, err
	}
	h.t = t
	return t, nil
}

// newKrbSessionTransport logs on once per connection with mutual
// authentication and seals every message with the context (plain HTTP).
func newKrbSessionTransport(cl *kerberos.Client, spn string) *sessionTransport {
	ht := &hostTicket{cl: cl, spn: spn}
	return &sessionTransport{logon: func(t *sessionTransport, c *sessionConn, _ []byte) (string, bool, error) {
		tkt, err := ht.get()
		if err != nil {
			return "", false, err
		}
		n, err := kerberos.NewNegotiation(tkt, true)
		if err != nil {
			return "", false, err
		}
		resp, raw, err := t.authPost(c, n.Header, nil)
		if err != nil {
			return "", false, err
		}
		if resp.StatusCode != http.StatusOK {
			he := &HTTPError{StatusCode: resp.StatusCode, Fault: faultReason(raw)}
			if resp.StatusCode == http.StatusUnauthorized {
				he.Fault = fmt.Sprintf("Kerberos logon as %s to %s refused by the host", cl, spn)
			}
			return "", false, he
		}
		// Mutual authentication: the host proves it holds the service key.
		if err := n.VerifyReply(resp.Header.Get("WWW-Authenticate")); err != nil {
			return "", false, err
		}
		ctx, err := n.Context()
		if err != nil {
			return "", false, err
		}
		c.sealer = ctx
		return "", false, nil
	}}
}

// krbTransport posts SOAP requests over TLS with a Negotiate header: one
// service ticket for its lifetime, a fresh authenticator per request.
// (masterzen's own Kerberos transport logs in again for every request.)
type krbTransport struct {
	cl   *kerberos.Client
	spn  string
	tc   *tls.Config
	url  string
	http *http.Client
	tkt  hostTicket
}

func (k *krbTransport) Transport(ep *winrm.Endpoint) error {
	k.http, k.url = newHTTPClient(ep, k.tc, false)
	k.tkt = hostTicket{cl: k.cl, spn: k.spn}
	return nil
}

func (k *krbTransport) Post(_ *winrm.Client, request *soap.SoapMessage) (string, error) {
	req, err := soapRequest(k.url, request.String())
	if err != nil {
		return "", err
	}
	t, err := k.tkt.get()
	if err != nil {
		return "", err
	}
	h, err := kerberos.NegotiateHeader(t)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", h)
	return doPost(k.http, req)
}
