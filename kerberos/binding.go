package kerberos

import (
	"bytes"
	"crypto"
	"crypto/md5"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"

	// The hashes RFC 5929 may name, linked in for crypto.Hash.New.
	_ "crypto/sha256"
	_ "crypto/sha512"
)

// ChannelBinding is the application data of GSS-API channel bindings
// (RFC 5056): what a Negotiate token binds its authentication to. For a
// TLS connection it is TLSServerEndPoint's, which Windows (IIS Extended
// Protection, LDAP channel binding) checks.
type ChannelBinding []byte

// TLSServerEndPoint is the tls-server-end-point channel binding of RFC 5929
// section 4 for the server's certificate: "tls-server-end-point:" and the
// hash of the certificate's DER, with the hash of its signature algorithm,
// or SHA-256 when that is MD5 or SHA-1. A certificate signed with no single
// hash (Ed25519) has none: the RFC defines none, and Windows issues none.
func TLSServerEndPoint(cert *x509.Certificate) (ChannelBinding, error) {
	if cert == nil {
		return nil, errors.New("kerberos: tls-server-end-point: no certificate")
	}
	var h crypto.Hash
	switch cert.SignatureAlgorithm {
	case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1,
		x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.DSAWithSHA256, x509.ECDSAWithSHA256:
		h = crypto.SHA256
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		h = crypto.SHA384
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		h = crypto.SHA512
	default:
		return nil, fmt.Errorf("kerberos: tls-server-end-point: the certificate's signature algorithm %v names no hash (RFC 5929 4.1)", cert.SignatureAlgorithm)
	}
	d := h.New()
	d.Write(cert.Raw)
	return append([]byte("tls-server-end-point:"), d.Sum(nil)...), nil
}

// bindingHash is the Bnd field of the authenticator checksum (RFC 4121
// 4.1.1.2): the MD5 of gss_channel_bindings_struct with no addresses, as
// every TLS binding has them: initiator and acceptor address types and
// lengths zero, then the application data's length and the data, each
// length and type a 32-bit little-endian integer. No binding is 16 zero
// bytes.
func bindingHash(cb ChannelBinding) [16]byte {
	if cb == nil {
		return [16]byte{}
	}
	b := make([]byte, 20, 20+len(cb))
	binary.LittleEndian.PutUint32(b[16:], uint32(len(cb)))
	return md5.Sum(append(b, cb...))
}

// adAPOptionsCBT is the authenticator's authorization-data field ([8])
// that MS-KILE 3.2.5.8 has a client send with channel bindings:
// AD-IF-RELEVANT (1) holding AD-AUTH-DATA-AP-OPTIONS (143) whose data is
// KERB_AP_OPTIONS_CBT (0x4000) as a 32-bit little-endian integer. It tells
// the acceptor the client binds, so that one set to check bindings when a
// client offers them (IIS's Allow) refuses a token whose binding is zero.
var adAPOptionsCBT = []byte{
	0xa8, 0x1f, 0x30, 0x1d, // [8] AuthorizationData
	0x30, 0x1b, 0xa0, 0x03, 0x02, 0x01, 0x01, // ad-type AD-IF-RELEVANT
	0xa1, 0x14, 0x04, 0x12, // ad-data: AuthorizationData
	0x30, 0x10, 0x30, 0x0e, 0xa0, 0x04, 0x02, 0x02, 0x00, 0x8f, // ad-type 143
	0xa1, 0x06, 0x04, 0x04, 0x00, 0x40, 0x00, 0x00, // KERB_AP_OPTIONS_CBT
}

// MS-KILE 2.2.11 and 3.2.5.8.
const (
	adAuthDataAPOptions = 143
	kerbAPOptionsCBT    = 0x4000
)

// ErrChannelBinding: the token's channel binding is not the one of the
// connection it came on, or it has none where one is required. Exchange
// with Extended Protection set to Require (IIS tokenChecking) answers such
// a token with 401.
var ErrChannelBinding = errors.New("the token's channel binding does not match the connection (Extended Protection)")

// TokenChecking is what an acceptor requires of a token's channel binding,
// as IIS's extendedProtection tokenChecking: None (the zero value) ignores
// it; Allow checks a binding the client offers (a nonzero one, or
// KERB_AP_OPTIONS_CBT) and accepts a token without; Require refuses a token
// whose binding is not the connection's.
type TokenChecking int

// The values of IIS's extendedProtection tokenChecking.
const (
	TokenCheckingNone TokenChecking = iota
	TokenCheckingAllow
	TokenCheckingRequire
)

// String is IIS's spelling of the value.
func (c TokenChecking) String() string {
	switch c {
	case TokenCheckingNone:
		return "None"
	case TokenCheckingAllow:
		return "Allow"
	case TokenCheckingRequire:
		return "Require"
	}
	return fmt.Sprintf("TokenChecking(%d)", int(c))
}

// checkBinding applies c to the Bnd of an authenticator checksum and to
// whether the client said it binds (KERB_AP_OPTIONS_CBT), for a connection
// whose binding is want.
func (c TokenChecking) checkBinding(bnd []byte, clientBinds bool, want ChannelBinding) error {
	if c == TokenCheckingNone {
		return nil
	}
	zero := bytes.Equal(bnd, make([]byte, 16))
	if c == TokenCheckingAllow && zero && !clientBinds {
		return nil
	}
	if zero {
		return fmt.Errorf("%w: the token carries no channel binding (tokenChecking %v)", ErrChannelBinding, c)
	}
	if h := bindingHash(want); want == nil || !bytes.Equal(bnd, h[:]) {
		return fmt.Errorf("%w: the token is bound to another channel (another certificate, or a TLS-inspecting device in between)", ErrChannelBinding)
	}
	return nil
}
