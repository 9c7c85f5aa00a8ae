package winrs

import (
	"crypto/tls"
	"encoding/xml"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/masterzen/winrm"

	"github.com/segkcd/segkcd/internal/wsman"
)

// newHTTPClient is the HTTP client every segkcd transport posts with: over
// TLS when tc is set (tc already holds any client certificate), with the
// endpoint's timeout. oneConn pins it to a single TCP connection, which
// connection-bound NTLM needs.
func newHTTPClient(ep *winrm.Endpoint, tc *tls.Config, oneConn bool) (*http.Client, string) {
	scheme := "http"
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: ep.Timeout,
		DialContext:     (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		IdleConnTimeout: 90 * time.Second}
	if oneConn {
		tr.MaxConnsPerHost, tr.MaxIdleConnsPerHost = 1, 1
	}
	if tc != nil {
		scheme = "https"
		tr.TLSClientConfig = tc
	}
	url := scheme + "://" + net.JoinHostPort(ep.Host, strconv.Itoa(ep.Port)) + "/wsman"
	return &http.Client{Transport: tr, Timeout: ep.Timeout}, url
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
	tc  *tls.Config // with the client certificate
	hc  *http.Client
	url string
}

func (c *certTransport) Transport(ep *winrm.Endpoint) (err error) {
	c.hc, c.url = newHTTPClient(ep, c.tc, false)
	return nil
}

func (c *certTransport) Post(_ *winrm.Client, request *soapMessage) (string, error) {
	req, err := soapRequest(c.url, request.String())
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", wsman.CertAuthHeader)
	return doPost(c.hc, req)
}

// basicTransport sends the user and password with every request.
// masterzen's own loses the status of a non-200 reply.
type basicTransport struct {
	user, password string
	tc             *tls.Config
	hc             *http.Client
	url            string
}

func (b *basicTransport) Transport(ep *winrm.Endpoint) (err error) {
	b.hc, b.url = newHTTPClient(ep, b.tc, false)
	return nil
}

func (b *basicTransport) Post(_ *winrm.Client, request *soapMessage) (string, error) {
	req, err := soapRequest(b.url, request.String())
	if err != nil {
		return "", err
	}
	req.SetBasicAuth(b.user, b.password)
	return doPost(b.hc, req)
}
