package psremote

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/masterzen/winrm"
)

// newHTTPClient is the HTTP client every segkcd transport posts with:
// TLS 1.2 or later verified against Config.CACert, an optional client
// certificate, and the endpoint's timeout. oneConn pins it to a single
// TCP connection, which connection-bound NTLM needs.
func newHTTPClient(ep *winrm.Endpoint, cert *tls.Certificate, oneConn bool) (*http.Client, string, error) {
	scheme := "http"
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: ep.Timeout,
		DialContext:     (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		IdleConnTimeout: 90 * time.Second}
	if oneConn {
		tr.MaxConnsPerHost, tr.MaxIdleConnsPerHost = 1, 1
	}
	if ep.HTTPS {
		scheme = "https"
		cfg := &tls.Config{InsecureSkipVerify: ep.Insecure, MinVersion: tls.VersionTLS12}
		if len(ep.CACert) > 0 {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(ep.CACert) {
				return nil, "", fmt.Errorf("psremote: no certificate in CACert")
			}
			cfg.RootCAs = pool
		}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		tr.TLSClientConfig = cfg
	}
	url := scheme + "://" + net.JoinHostPort(ep.Host, strconv.Itoa(ep.Port)) + "/wsman"
	return &http.Client{Transport: tr, Timeout: ep.Timeout}, url, nil
}

// soapRequest is a POST of a SOAP message.
func soapRequest(url string, body string) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/soap+xml;charset=UTF-8")
	return req, nil
}

// HTTPError is a WinRM reply other than 200, with the SOAP fault's
// reason when there is one.
type HTTPError struct {
	StatusCode int
	Fault      string
}

func (e *HTTPError) Error() string {
	if e.Fault == "" {
		return fmt.Sprintf("http error %d", e.StatusCode)
	}
	return fmt.Sprintf("http error %d: %s", e.StatusCode, e.Fault)
}

// replyBody reads a (decrypted) reply and turns a non-200 into *HTTPError.
func replyBody(status int, body []byte) (string, error) {
	if status != http.StatusOK {
		return "", &HTTPError{StatusCode: status, Fault: faultReason(body)}
	}
	return string(body), nil
}

func readAll(r io.Reader) ([]byte, error) { return io.ReadAll(io.LimitReader(r, 16<<20)) }

// doPost sends a request whose credential travels in it (certificate,
// Kerberos, Basic) and reads the reply.
func doPost(hc *http.Client, req *http.Request) (string, error) {
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := readAll(resp.Body)
	if err != nil {
		return "", err
	}
	return replyBody(resp.StatusCode, body)
}

// faultReason pulls the text of a SOAP fault's Reason (or WSManFault
// Message) out of a body; empty when there is none.
func faultReason(body []byte) string {
	dec := xml.NewDecoder(strings.NewReader(string(body)))
	var in string
	var parts []string
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch t := tok.(type) {
		case xml.StartElement:
			in = t.Name.Local
		case xml.EndElement:
			in = ""
		case xml.CharData:
			if s := strings.TrimSpace(string(t)); s != "" && (in == "Text" || in == "Message") {
				parts = append(parts, s)
			}
		}
	}
	return strings.Join(parts, "; ")
}

// certTransport logs on with the TLS client certificate (WinRM's
// certificate mapping): the request carries no credential, only the
// header that asks for it. (masterzen's ClientAuthRequest loses the
// status of a non-200 reply: its deferred assignment does not reach the
// return.)
type certTransport struct {
	cert tls.Certificate
	hc   *http.Client
	url  string
}

// CertAuthHeader is the Authorization value of a certificate logon: it
// names the WS-Management security profile, the credential is the TLS
// client certificate.
const CertAuthHeader = "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual"

func (c *certTransport) Transport(ep *winrm.Endpoint) (err error) {
	c.hc, c.url, err = newHTTPClient(ep, &c.cert, false)
	return err
}

func (c *certTransport) Post(_ *winrm.Client, request *soapMessage) (string, error) {
	req, err := soapRequest(c.url, request.String())
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", CertAuthHeader)
	return doPost(c.hc, req)
}

// basicTransport sends the user and password with every request.
// masterzen's own loses the status of a non-200 reply.
type basicTransport struct {
	user, password string
	hc             *http.Client
	url            string
}

func (b *basicTransport) Transport(ep *winrm.Endpoint) (err error) {
	b.hc, b.url, err = newHTTPClient(ep, nil, false)
	return err
}

func (b *basicTransport) Post(_ *winrm.Client, request *soapMessage) (string, error) {
	req, err := soapRequest(b.url, request.String())
	if err != nil {
		return "", err
	}
	req.SetBasicAuth(b.user, b.password)
	return doPost(b.hc, req)
}
