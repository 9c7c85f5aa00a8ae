package psremote

import (
	"fmt"
	"net/http"

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/masterzen/winrm"
	"github.com/masterzen/winrm/soap"

	"github.com/segkcd/segkcd/kerberos"
)

type soapMessage = soap.SoapMessage

// AuthKerberos authenticates with a Kerberos ticket (SPNEGO Negotiate),
// from Config.Kerberos. On HTTP the logon is mutual and every message is
// sealed with the Kerberos context (AES keys); on HTTPS each request
// carries a fresh authenticator.
const AuthKerberos = "kerberos"

// newKrbSessionTransport logs on once per connection with mutual
// authentication and seals every message with the context (plain HTTP).
func newKrbSessionTransport(cl *client.Client, spn string) *sessionTransport {
	return &sessionTransport{logon: func(t *sessionTransport, c *sessionConn, _ []byte) (string, bool, error) {
		tkt, key, err := cl.GetServiceTicket(spn)
		if err != nil {
			return "", false, fmt.Errorf("kerberos: service ticket for %s: %w", spn, err)
		}
		n, err := kerberos.NewNegotiation(&kerberos.Ticket{Ticket: tkt, SessionKey: key,
			Client: cl.Credentials.CName(), ClientRealm: cl.Credentials.Domain()}, true)
		if err != nil {
			return "", false, err
		}
		resp, raw, err := t.authPost(c, n.Header, nil)
		if err != nil {
			return "", false, err
		}
		if resp.StatusCode == http.StatusUnauthorized {
			return "", false, fmt.Errorf("psremote: Kerberos logon as %s to %s refused by the host (HTTP 401)", cl.Credentials.CName().PrincipalNameString(), spn)
		}
		if resp.StatusCode != http.StatusOK {
			return "", false, &HTTPError{StatusCode: resp.StatusCode, Fault: faultReason(raw)}
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

// krbTransport posts SOAP requests with an SPNEGO header from one gokrb5
// client. masterzen's own Kerberos transport builds a new client and logs
// in again for every request; this one logs in once and reuses the
// service ticket, with a fresh authenticator per request.
type krbTransport struct {
	cl   *client.Client
	spn  string
	url  string
	http *http.Client
}

func newKrbTransport(cl *client.Client, spn string) *krbTransport {
	return &krbTransport{cl: cl, spn: spn}
}

func (k *krbTransport) Transport(ep *winrm.Endpoint) (err error) {
	k.http, k.url, err = newHTTPClient(ep, nil, false)
	return err
}

func (k *krbTransport) Post(_ *winrm.Client, request *soap.SoapMessage) (string, error) {
	req, err := soapRequest(k.url, request.String())
	if err != nil {
		return "", err
	}
	if err := spnego.SetSPNEGOHeader(k.cl, req, k.spn); err != nil {
		return "", fmt.Errorf("kerberos: %w", err)
	}
	return doPost(k.http, req)
}
