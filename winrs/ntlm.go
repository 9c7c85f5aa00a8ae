package winrs

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"

	"github.com/segkcd/segkcd/internal/ntlm"
	"github.com/segkcd/segkcd/internal/wsman"
)

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
			cl.ChannelBindings = wsman.TLSServerEndPoint(resp.TLS.PeerCertificates[0])
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
			return "", false, &HTTPError{StatusCode: resp.StatusCode, Fault: fmt.Sprintf("NTLM logon as %s refused by the host: wrong password, unknown user, or a channel binding the host rejects", who)}
		}
		c.sealer = wsman.NTLMSealer(sess)
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
			return nil, fmt.Errorf("winrs: NTLM challenge is not base64")
		}
		return b, nil
	}
	return nil, fmt.Errorf("winrs: the host answered NTLM NEGOTIATE with HTTP %d and no challenge (is Negotiate enabled in WinRM's service auth?)", resp.StatusCode)
}
