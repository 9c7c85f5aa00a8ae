package psremote

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/masterzen/winrm"
	"github.com/masterzen/winrm/soap"
)

// AuthKerberos authenticates with a Kerberos ticket (SPNEGO Negotiate),
// from Config.Kerberos. This masterzen/winrm version has no Kerberos
// message encryption: HTTPS, or AllowUnencrypted on a test host.
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

func (k *krbTransport) Transport(ep *winrm.Endpoint) error {
	scheme := "http"
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: ep.Timeout,
		DialContext: (&net.Dialer{Timeout: 30 * time.Second}).DialContext}
	if ep.HTTPS {
		scheme = "https"
		cfg := &tls.Config{InsecureSkipVerify: ep.Insecure, MinVersion: tls.VersionTLS12}
		if len(ep.CACert) > 0 {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(ep.CACert) {
				return fmt.Errorf("psremote: no certificate in CACert")
			}
			cfg.RootCAs = pool
		}
		tr.TLSClientConfig = cfg
	}
	k.url = scheme + "://" + net.JoinHostPort(ep.Host, strconv.Itoa(ep.Port)) + "/wsman"
	k.http = &http.Client{Transport: tr, Timeout: ep.Timeout}
	return nil
}

func (k *krbTransport) Post(_ *winrm.Client, request *soap.SoapMessage) (string, error) {
	req, err := http.NewRequest(http.MethodPost, k.url, strings.NewReader(request.String()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/soap+xml;charset=UTF-8")
	if err := spnego.SetSPNEGOHeader(k.cl, req, k.spn); err != nil {
		return "", fmt.Errorf("kerberos: %w", err)
	}
	resp, err := k.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("http error %d", resp.StatusCode)
	}
	return string(body), nil
}
