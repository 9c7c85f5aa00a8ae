package wsman

import (
	"crypto"
	_ "crypto/sha256" // the channel binding hashes
	_ "crypto/sha512"
	"crypto/x509"

	"github.com/segkcd/segkcd/internal/ntlm"
)

// Sealer is a security context that seals WinRM messages (MS-WSMV
// 2.2.9.1): NTLMSealer over an *ntlm.Session, or a
// *kerberos.SecurityContext.
type Sealer interface {
	// Seal encrypts msg; data is as long as msg, signature goes before it.
	Seal(msg []byte) (data, signature []byte, err error)
	// Unseal checks and decrypts what the peer sealed.
	Unseal(data, signature []byte) ([]byte, error)
}

// NTLMSealer makes an NTLM session a Sealer.
func NTLMSealer(s *ntlm.Session) Sealer { return ntlmSealer{s} }

type ntlmSealer struct{ s *ntlm.Session }

func (n ntlmSealer) Seal(msg []byte) ([]byte, []byte, error) {
	data, sig := n.s.Seal(msg)
	return data, sig, nil
}

func (n ntlmSealer) Unseal(data, sig []byte) ([]byte, error) { return n.s.Unseal(data, sig) }

// CertAuthHeader is the Authorization value of a certificate logon: it
// names the WS-Management security profile, the credential is the TLS
// client certificate.
const CertAuthHeader = "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual"

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
