package winrs

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/masterzen/winrm"

	"github.com/segkcd/segkcd/internal/redact"
	"github.com/segkcd/segkcd/kerberos"
)

// Auth is how a Client logs on to the host: Basic, NTLM, Certificate or
// Kerberos. Each formats without its secret.
type Auth interface {
	// transport builds the HTTP layer for a host; tc is nil on plain HTTP.
	transport(host string, tc *tls.Config) (winrm.Transporter, error)
}

// Basic sends the user and password with every request: over TLS only,
// unless Config.AllowUnencrypted (a test host).
type Basic struct {
	User, Password string // User: "DOMAIN\\user" or a UPN
}

// NTLM logs on with NTLMv2. On plain HTTP every message is then sealed
// with the NTLM session (MS-WSMV message encryption); over TLS the logon
// is bound to the host's certificate (channel binding, which IIS calls
// extended protection).
type NTLM struct {
	User, Password string // User: "DOMAIN\\user" or a UPN
}

// Certificate logs on with a TLS client certificate that the host maps to
// a local account (winrm/config/service/certmapping): TLS only. The
// certificate needs Client Authentication in its extended key usage and
// the account's UPN in its subject alternative name.
type Certificate struct {
	Certificate tls.Certificate
}

// Kerberos logs on with a service ticket from Client (SPNEGO Negotiate),
// the same client that binds to AD and asks for S4U tickets. On plain
// HTTP the logon is mutual and every message is sealed with the context
// (AES keys); over TLS each request carries a fresh authenticator.
type Kerberos struct {
	Client *kerberos.Client
	// SPN is the host's service name; empty means HTTP/<Config.Host>.
	SPN string
}

func (a Basic) transport(_ string, tc *tls.Config) (winrm.Transporter, error) {
	return &basicTransport{user: a.User, password: a.Password, tc: tc}, nil
}

func (a NTLM) transport(host string, tc *tls.Config) (winrm.Transporter, error) {
	if a.User == "" {
		return nil, errors.New("NTLM needs a User")
	}
	t := newNTLMTransport(a.User, a.Password, "HTTP/"+host)
	t.tc = tc
	return t, nil
}

func (a Certificate) transport(_ string, tc *tls.Config) (winrm.Transporter, error) {
	if tc == nil {
		return nil, errors.New("certificate logon needs TLS")
	}
	if len(a.Certificate.Certificate) == 0 || a.Certificate.PrivateKey == nil {
		return nil, errors.New("certificate logon needs a certificate and its private key")
	}
	tc = tc.Clone()
	tc.Certificates = []tls.Certificate{a.Certificate}
	return &certTransport{tc: tc}, nil
}

func (a Kerberos) transport(host string, tc *tls.Config) (winrm.Transporter, error) {
	if a.Client == nil {
		return nil, errors.New("Kerberos needs a Client")
	}
	spn := a.SPN
	if spn == "" {
		spn = "HTTP/" + host
	}
	if tc == nil {
		return newKrbSessionTransport(a.Client, spn), nil
	}
	return &krbTransport{cl: a.Client, spn: spn, tc: tc}, nil
}

// Format prints the logon without its password, for every verb.
func (a Basic) Format(f fmt.State, verb rune) {
	type plain Basic
	m := plain(a)
	m.Password = redact.String(m.Password)
	redact.Format(f, verb, "winrs.Basic", m)
}

// Format prints the logon without its password, for every verb.
func (a NTLM) Format(f fmt.State, verb rune) {
	type plain NTLM
	m := plain(a)
	m.Password = redact.String(m.Password)
	redact.Format(f, verb, "winrs.NTLM", m)
}

// Format prints the certificate's subject, never its private key.
func (a Certificate) Format(f fmt.State, verb rune) {
	subject := "(none)"
	if l := a.Certificate.Leaf; l != nil {
		subject = l.Subject.String()
	} else if len(a.Certificate.Certificate) > 0 {
		subject = "(unparsed)"
	}
	fmt.Fprintf(f, "winrs.Certificate{%s}", subject)
}
