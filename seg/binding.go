package seg

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"

	"github.com/segkcd/segkcd/kerberos"
)

// errNoChannelBinding: the certificate Exchange showed has no
// tls-server-end-point binding (RFC 5929 defines none for it).
var errNoChannelBinding = errors.New("no channel binding for the upstream's certificate")

// certificateBinding is an upstream certificate's channel binding,
// remembered: each request's header is bound, and the certificate rarely
// changes.
type certificateBinding struct {
	raw []byte
	cb  kerberos.ChannelBinding
}

// binding is the tls-server-end-point channel binding of cert, the
// certificate the upstream showed on a connection.
func (u *Upstream) binding(cert *x509.Certificate) (kerberos.ChannelBinding, error) {
	if b := u.bound.Load(); b != nil && bytes.Equal(b.raw, cert.Raw) {
		return b.cb, nil
	}
	cb, err := kerberos.TLSServerEndPoint(cert)
	if err != nil {
		return nil, err
	}
	u.bound.Store(&certificateBinding{raw: cert.Raw, cb: cb})
	return cb, nil
}

// setNegotiate sets req's Negotiate header for fw's ticket, unbound, when
// the transport does not make it on the connection (authorizeOnConn).
func setNegotiate(req *http.Request, fw *forward) error {
	if fw.onConn {
		req.Header.Del("Authorization") // authorizeOnConn sets it
		return nil
	}
	auth, err := kerberos.NegotiateHeader(fw.ticket)
	if err != nil {
		return &Error{Stage: StageTicket, User: fw.user, Err: err}
	}
	req.Header.Set("Authorization", auth)
	return nil
}

// authorizeOnConn is UserPools' Authorize: the Negotiate header of the
// request's ticket, made for the connection it goes on and bound to that
// connection's TLS channel (unless the handler sends unbound tokens, or
// the upstream is plain HTTP). A request that is not the gateway's keeps
// its own header; one whose forward is another user's than the pool's
// (a caller reusing the pools with the wrong context) is refused, never
// given that user's ticket on this user's connection.
func authorizeOnConn(user string, req *http.Request, cs *tls.ConnectionState) (string, error) {
	fw, ok := req.Context().Value(ctxKey{}).(*forward)
	if !ok || fw.ticket == nil || !fw.onConn {
		return "", nil
	}
	if fw.sid != user {
		return "", &Error{Stage: StageForward, Status: http.StatusBadGateway, User: fw.user,
			Err: errors.New("a request carrying one user's ticket on another user's connections")}
	}
	var cb kerberos.ChannelBinding
	if !fw.unbound && cs != nil && len(cs.PeerCertificates) > 0 {
		var err error
		if cb, err = fw.upstream.binding(cs.PeerCertificates[0]); err != nil {
			return "", &Error{Stage: StageForward, Status: http.StatusBadGateway, User: fw.user, Err: fmt.Errorf("%w: %v", errNoChannelBinding, err)}
		}
	}
	auth, err := kerberos.NegotiateHeaderBound(fw.ticket, cb)
	if err != nil {
		return "", &Error{Stage: StageTicket, User: fw.user, Err: err}
	}
	return auth, nil
}
