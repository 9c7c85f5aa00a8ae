package kerberos

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"
)

// selfSigned makes a certificate signed with alg by key.
func selfSigned(t *testing.T, key crypto.Signer, alg x509.SignatureAlgorithm) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mail.corp.example.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), SignatureAlgorithm: alg}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// RFC 5929 4.1: the certificate's own signature hash, SHA-256 in place of
// MD5 and SHA-1, and none for a signature without a hash.
func TestTLSServerEndPoint(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for alg, h := range map[x509.SignatureAlgorithm]crypto.Hash{
		x509.ECDSAWithSHA1: crypto.SHA256, x509.ECDSAWithSHA256: crypto.SHA256,
		x509.ECDSAWithSHA384: crypto.SHA384, x509.ECDSAWithSHA512: crypto.SHA512,
	} {
		c := selfSigned(t, ec, alg)
		cb, err := TLSServerEndPoint(c)
		if err != nil {
			t.Fatal(alg, err)
		}
		d := h.New()
		d.Write(c.Raw)
		if want := append([]byte("tls-server-end-point:"), d.Sum(nil)...); !bytes.Equal(cb, want) {
			t.Errorf("%v: %x, want %x", alg, cb, want)
		}
	}
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := TLSServerEndPoint(selfSigned(t, ed, x509.PureEd25519)); err == nil {
		t.Error("an Ed25519 certificate has no tls-server-end-point")
	}
	if _, err := TLSServerEndPoint(nil); err == nil {
		t.Error("no certificate")
	}
}

// authenticatorOf decodes a Negotiate header's authenticator.
func authenticatorOf(t *testing.T, tk *Ticket, header string) types.Authenticator {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(header, "Negotiate "))
	if err != nil {
		t.Fatal(err)
	}
	var tok spnego.SPNEGOToken
	if err := tok.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	body, err := gssUnwrap(tokAPReq, tok.NegTokenInit.MechTokenBytes)
	if err != nil {
		t.Fatal(err)
	}
	var ap messages.APReq
	if err := ap.Unmarshal(body); err != nil {
		t.Fatal(err)
	}
	if err := ap.DecryptAuthenticator(tk.SessionKey); err != nil {
		t.Fatal(err)
	}
	return ap.Authenticator
}

// A bound token carries the MD5 of gss_channel_bindings_struct (RFC 4121
// 4.1.1.2) and KERB_AP_OPTIONS_CBT; TokenChecking's three values judge it
// and an unbound token as IIS's do.
func TestBoundToken(t *testing.T) {
	tk := testTicket(t)
	right, wrong := ChannelBinding("tls-server-end-point:right"), ChannelBinding("tls-server-end-point:wrong")
	bound, err := NegotiateHeaderBound(tk, right)
	if err != nil {
		t.Fatal(err)
	}
	ba := authenticatorOf(t, tk, bound)
	st := make([]byte, 20)
	binary.LittleEndian.PutUint32(st[16:], uint32(len(right)))
	if want := md5.Sum(append(st, right...)); !bytes.Equal(ba.Cksum.Checksum[4:20], want[:]) ||
		binary.LittleEndian.Uint32(ba.Cksum.Checksum[0:4]) != 16 {
		t.Fatalf("Bnd %x, want %x", ba.Cksum.Checksum[4:20], want)
	}
	if !claimsCBT(ba.AuthorizationData) {
		t.Fatalf("no KERB_AP_OPTIONS_CBT: %+v", ba.AuthorizationData)
	}
	// Our hand-written authorization data is gokrb5's encoding of the same.
	plain := ba
	plain.AuthorizationData = nil
	mine, err := authenticatorDER(&plain, true)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := ba.Marshal()
	if err != nil || !bytes.Equal(mine, theirs) {
		t.Fatalf("authenticator DER differs from gokrb5's (%v):\n%x\n%x", err, mine, theirs)
	}
	unbound, _ := NegotiateHeader(tk)
	ua := authenticatorOf(t, tk, unbound)
	if claimsCBT(ua.AuthorizationData) || !bytes.Equal(ua.Cksum.Checksum[4:20], make([]byte, 16)) {
		t.Fatal("an unbound token claims a binding")
	}
	for _, c := range []struct {
		mode TokenChecking
		auth types.Authenticator
		cb   ChannelBinding
		ok   bool
	}{
		{TokenCheckingNone, ba, wrong, true}, {TokenCheckingNone, ua, right, true},
		{TokenCheckingAllow, ba, right, true}, {TokenCheckingAllow, ba, wrong, false}, {TokenCheckingAllow, ua, right, true},
		{TokenCheckingRequire, ba, right, true}, {TokenCheckingRequire, ba, wrong, false}, {TokenCheckingRequire, ua, right, false},
	} {
		err := (&Acceptor{TokenChecking: c.mode, ChannelBinding: c.cb}).checkBinding(c.auth)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrChannelBinding)) {
			t.Errorf("%v, bound %v, acceptor's binding %q: %v", c.mode, claimsCBT(c.auth.AuthorizationData), c.cb, err)
		}
	}
	// A client that says it binds but sends a zero binding (a TLS proxy
	// that rewrote nothing could not; a broken client could) fails Allow.
	claims := ua
	claims.AuthorizationData = ba.AuthorizationData
	if err := (&Acceptor{TokenChecking: TokenCheckingAllow, ChannelBinding: right}).checkBinding(claims); !errors.Is(err, ErrChannelBinding) {
		t.Errorf("Allow, KERB_AP_OPTIONS_CBT with a zero binding: %v", err)
	}
}
