package psremote

import (
	"fmt"
	"net/http"

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/masterzen/winrm"
	"github.com/masterzen/winrm/soap"
)

type soapMessage = soap.SoapMessage

// AuthKerberos authenticates with a Kerberos ticket (SPNEGO Negotiate),
// from Config.Kerberos. Kerberos message encryption is not implemented:
// HTTPS, or AllowUnencrypted on a test host.
const AuthKerberos = "kerberos"

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
