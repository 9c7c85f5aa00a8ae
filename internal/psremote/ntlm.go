package psremote

import (
	"crypto"
	_ "crypto/sha256" // the channel binding hashes
	_ "crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"

	"github.com/segkcd/segkcd/internal/ntlm"
)

// NTLMSealer makes an NTLM session a Sealer.
func NTLMSealer(s *ntlm.Session) Sealer { return ntlmSealer{s} }

type ntlmSealer struct{ s *ntlm.Session }

func (n ntlmSealer) Seal(msg []byte) ([]byte, []byte, error) {
	data, sig := n.s.Seal(msg)
	return data, sig, nil
}

func (n ntlmSealer) Unseal(data, sig []byte) ([]byte, error) { return n.s.Unseal(data, sig) }

// newNTLMTransport logs on with NTLMv2: on plain HTTP every message is
// then sealed with the NTLM session; on HTTPS the AUTHENTICATE message is
// bound to the server's certificate (channel binding, what IIS calls
// extended protection).
func newNTLMTransport(user, password, spn string) *sessionTransport {
	u, d := ntlm.SplitUser(user)
	who := user
	return &sessionTransport{logon: func(t *sessionTransport, c *sessionConn, body []byte) (string, bool, error) {
		cl := &ntlm.Client{User: u, Domain: d, Password: password, TargetName: spn}
		resp, _, err := t.authPost(c, "Negotiate "+base64.StdEncoding.EncodeToString(cl.Negotiate()), nil)
		if err != nil {
			return "", false, err
		}
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
		if t.encrypt() && sess.Flags()&(ntlm.FlagSeal|ntlm.FlagSign|ntlm.Flag128) != ntlm.FlagSeal|ntlm.FlagSign|ntlm.Flag128 {
			return "", false, fmt.Errorf("%w: the host did not agree to 128-bit NTLM sealing (flags %#x), which plain HTTP needs", ErrEncryption, sess.Flags())
		}
		var first []byte // on HTTP the last leg is empty: the message must be sealed
		if !t.encrypt() {
			first = body
		}
		resp, raw, err := t.authPost(c, "Negotiate "+base64.StdEncoding.EncodeToString(auth), first)
		if err != nil {
			return "", false, err
		}
		if resp.StatusCode == http.StatusUnauthorized {
			return "", false, fmt.Errorf("psremote: NTLM logon as %s refused by the host (HTTP 401): wrong password, unknown user, or a channel binding the host rejects", who)
		}
		c.sealer = NTLMSealer(sess)
		return t.finish(resp, raw)
	}}
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
