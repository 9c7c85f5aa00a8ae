package ad

import (
	"context"
	"errors"
	"fmt"

	"github.com/segkcd/segkcd/kerberos"
)

// saslGSSAPI is the client side of a SASL GSSAPI bind (RFC 4752) for
// go-ldap, on a kerberos.Client: the service ticket comes from the
// client, the AP-REQ, the AP-REP check and the wrap tokens from the
// kerberos package's one GSS-API implementation. go-ldap's own GSSAPI
// client (checked with v3.4.15) binds to the lab's Samba, whose final
// token is neither rotated nor sealed, but reads the rotation count
// without rotating and cannot unseal, both of which RFC 4121 allows an
// acceptor to send; so this one stays.
type saslGSSAPI struct {
	ctx context.Context
	cl  *kerberos.Client
	n   *kerberos.Negotiation
	sc  *kerberos.SecurityContext
}

// SASL GSSAPI security layers (RFC 4752 3.3).
const saslNoSecurityLayer = 0x01

// InitSecContext sends the AP-REQ, then reads the DC's AP-REP.
func (s *saslGSSAPI) InitSecContext(target string, input []byte) ([]byte, bool, error) {
	return s.InitSecContextWithOptions(target, input, nil)
}

// InitSecContextWithOptions is InitSecContext; the AP options go-ldap may
// pass are ours to choose (mutual authentication, always).
func (s *saslGSSAPI) InitSecContextWithOptions(target string, input []byte, _ []int) ([]byte, bool, error) {
	if input == nil {
		t, err := s.cl.ServiceTicket(s.ctx, target)
		if err != nil {
			return nil, false, err
		}
		if s.n, err = kerberos.NewKerberosInit(t); err != nil {
			return nil, false, err
		}
		return s.n.Token, true, nil
	}
	if s.n == nil {
		return nil, false, errors.New("GSSAPI reply before the request")
	}
	if err := s.n.AcceptReply(input); err != nil {
		return nil, false, err
	}
	sc, err := s.n.Context()
	if err != nil {
		return nil, false, err
	}
	s.sc = sc
	return []byte{}, false, nil
}

// NegotiateSaslAuth checks the DC's offer of security layers and chooses
// none: the connection is already TLS.
func (s *saslGSSAPI) NegotiateSaslAuth(input []byte, authzid string) ([]byte, error) {
	if s.sc == nil {
		return nil, errors.New("GSSAPI SASL offer before the context")
	}
	payload, err := s.sc.Unwrap(input)
	if err != nil {
		return nil, fmt.Errorf("GSSAPI SASL offer: %w", err)
	}
	if len(payload) != 4 {
		return nil, fmt.Errorf("GSSAPI SASL offer: %d bytes, want 4", len(payload))
	}
	if payload[0]&saslNoSecurityLayer == 0 {
		return nil, errors.New("the DC insists on a SASL security layer, which segkcd does not implement; bind over LDAPS")
	}
	return s.sc.Wrap(append([]byte{saslNoSecurityLayer, 0, 0, 0}, authzid...))
}

// DeleteSecContext forgets the context.
func (s *saslGSSAPI) DeleteSecContext() error {
	s.n, s.sc = nil, nil
	return nil
}
