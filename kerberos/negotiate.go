package kerberos

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jcmturner/gofork/encoding/asn1"
	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/iana/flags"
	"github.com/jcmturner/gokrb5/v8/iana/keyusage"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"
)

// GSS-API constants (RFC 4121).
var (
	tokAPReq    = []byte{0x01, 0x00}
	tokAPRep    = []byte{0x02, 0x00}
	tokKRBError = []byte{0x03, 0x00}
)

const (
	gssChecksumType = 0x8003 // the authenticator checksum of RFC 4121 4.1.1
	gssFlagMutual   = 2
	gssFlagConf     = 16
	gssFlagInteg    = 32
)

// Negotiation is one SPNEGO initiation with a service ticket: the
// Authorization header to send, and for mutual authentication the check of
// the server's reply. Make a new one for every request: each carries a
// fresh authenticator, which a server's replay cache requires.
type Negotiation struct {
	// Header is the value of the Authorization header: "Negotiate <base64>".
	// Empty for a bare Kerberos initiation (NewKerberosInit).
	Header string
	// Token is the initial context token itself: the SPNEGO NegTokenInit
	// that Header carries, or from NewKerberosInit the bare Kerberos token.
	Token []byte

	key    types.EncryptionKey
	ctime  time.Time
	cusec  int
	mutual bool
	subkey types.EncryptionKey // the authenticator's, with mutual
	seq    int64
	ctx    *SecurityContext
	ctxErr error
}

// NegotiateHeader returns "Negotiate <base64 SPNEGO NegTokenInit>" for the
// ticket, with a fresh AP-REQ authenticator in the name of the ticket's
// client (for S4U tickets, the user).
func NegotiateHeader(t *Ticket) (string, error) {
	n, err := NewNegotiation(t, false)
	if err != nil {
		return "", err
	}
	return n.Header, nil
}

// NegotiateHeaderBound is NegotiateHeader bound to a channel: the
// authenticator's checksum carries cb's hash (RFC 4121 4.1.1.2), and its
// authorization data KERB_AP_OPTIONS_CBT (MS-KILE 3.2.5.8), as Windows
// clients send them. For a request over TLS, cb is TLSServerEndPoint of
// the certificate the server showed on that connection, which IIS checks
// under Extended Protection. A nil cb gives NegotiateHeader's token.
func NegotiateHeaderBound(t *Ticket, cb ChannelBinding) (string, error) {
	n, err := newNegotiation(t, false, cb)
	if err != nil {
		return "", err
	}
	return n.Header, nil
}

// NewNegotiation builds the header; with mutual it asks the server to
// prove it holds the service key, which VerifyReply then checks.
func NewNegotiation(t *Ticket, mutual bool) (*Negotiation, error) {
	return newNegotiation(t, mutual, nil)
}

func newNegotiation(t *Ticket, mutual bool, cb ChannelBinding) (*Negotiation, error) {
	n, err := newInitiation(t, mutual, true, cb)
	if err != nil {
		return nil, err
	}
	var hdr strings.Builder
	hdr.Grow(len("Negotiate ") + base64.StdEncoding.EncodedLen(len(n.Token)))
	hdr.WriteString("Negotiate ")
	enc := base64.NewEncoder(base64.StdEncoding, &hdr)
	enc.Write(n.Token)
	enc.Close()
	n.Header = hdr.String()
	return n, nil
}

// NewKerberosInit is a mutual GSS-API Kerberos initiation (RFC 4121)
// without SPNEGO, as a SASL GSSAPI bind (RFC 4752) sends it: Token is the
// initial context token; AcceptReply checks the acceptor's AP-REP and sets
// up the Context that unwraps and wraps the security-layer negotiation.
func NewKerberosInit(t *Ticket) (*Negotiation, error) { return newInitiation(t, true, false, nil) }

// newInitiation builds the AP-REQ with a fresh authenticator, framed for
// SPNEGO or bare, bound to cb when it is not nil.
func newInitiation(t *Ticket, mutual, withSPNEGO bool, cb ChannelBinding) (*Negotiation, error) {
	const op = "Negotiate"
	if t == nil {
		return nil, fail(op, "", errors.New("no ticket"))
	}
	auth, err := types.NewAuthenticator(t.ClientRealm, t.Client)
	if err != nil {
		return nil, fail(op, t.ServerName(), err)
	}
	auth.CTime, auth.Cusec = t.authTime(time.Now())
	gssFlags := uint32(gssFlagInteg | gssFlagConf)
	if mutual {
		gssFlags |= gssFlagMutual
		// A context that may seal messages gets its own subkey and
		// sequence number, as Windows clients send.
		if err := auth.GenerateSeqNumberAndSubKey(t.SessionKey.KeyType, len(t.SessionKey.KeyValue)); err != nil {
			return nil, fail(op, t.ServerName(), err)
		}
	}
	// The binding's length (16), its hash (zero without one), then the GSS flags.
	sum := make([]byte, 24)
	binary.LittleEndian.PutUint32(sum[0:], 16)
	bnd := bindingHash(cb)
	copy(sum[4:20], bnd[:])
	binary.LittleEndian.PutUint32(sum[20:], gssFlags)
	auth.Cksum = types.Checksum{CksumType: gssChecksumType, Checksum: sum}
	b, err := negotiateToken(t, auth, mutual, withSPNEGO, cb != nil)
	if err != nil {
		return nil, fail(op, t.ServerName(), err)
	}
	return &Negotiation{Token: b,
		key: t.SessionKey, ctime: auth.CTime, cusec: auth.Cusec, mutual: mutual,
		subkey: auth.SubKey, seq: auth.SeqNumber}, nil
}

// Context returns the security context that a successful VerifyReply of a
// mutual negotiation set up, to seal messages with (WinRM on plain HTTP).
// It fails before VerifyReply, without mutual authentication, and for
// keys that cannot seal (RC4).
func (n *Negotiation) Context() (*SecurityContext, error) {
	if n.ctx == nil && n.ctxErr == nil {
		return nil, errors.New("kerberos: no security context: VerifyReply has not accepted a mutual reply")
	}
	return n.ctx, n.ctxErr
}

// VerifyReply checks the server's "WWW-Authenticate: Negotiate <token>"
// answer: an accepted SPNEGO response whose AP-REP, decrypted with the
// ticket's session key, echoes our authenticator's time.
func (n *Negotiation) VerifyReply(wwwAuthenticate string) error {
	const op = "verify Negotiate reply"
	b64, ok := cutNegotiate(wwwAuthenticate)
	if !ok {
		return fail(op, "", errors.New("not a Negotiate header with a token"))
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return fail(op, "", err)
	}
	var tok spnego.SPNEGOToken
	if err := tok.Unmarshal(raw); err != nil || !tok.Resp {
		return fail(op, "", fmt.Errorf("not an SPNEGO response: %v", err))
	}
	if tok.NegTokenResp.State() != spnego.NegStateAcceptCompleted {
		return fail(op, "", fmt.Errorf("server did not accept (state %d)", tok.NegTokenResp.State()))
	}
	if !n.mutual {
		return nil
	}
	return n.acceptAPRep(op, tok.NegTokenResp.ResponseToken)
}

// AcceptReply checks the acceptor's bare Kerberos reply to a
// NewKerberosInit, an AP-REP that must echo our authenticator, and sets up
// the Context. A KRB-ERROR in its place fails with the acceptor's message.
func (n *Negotiation) AcceptReply(token []byte) error {
	const op = "verify Kerberos reply"
	if !n.mutual {
		return fail(op, "", errors.New("not a mutual initiation"))
	}
	if body, err := gssUnwrap(tokKRBError, token); err == nil {
		var ke messages.KRBError
		if err := ke.Unmarshal(body); err == nil {
			return fail(op, "", fmt.Errorf("the acceptor refused the ticket: %s", ke.Error()))
		}
	}
	return n.acceptAPRep(op, token)
}

// acceptAPRep checks a GSS-framed AP-REP against our authenticator and
// sets up the context.
func (n *Negotiation) acceptAPRep(op string, token []byte) error {
	body, err := gssUnwrap(tokAPRep, token)
	if err != nil {
		return fail(op, "", err)
	}
	var rep messages.APRep
	if err := rep.Unmarshal(body); err != nil {
		return fail(op, "", err)
	}
	plain, err := crypto.DecryptEncPart(rep.EncPart, n.key, keyusage.AP_REP_ENCPART)
	if err != nil {
		return fail(op, "", fmt.Errorf("AP-REP does not decrypt with the session key: %w", err))
	}
	var part messages.EncAPRepPart
	if err := part.Unmarshal(plain); err != nil {
		return fail(op, "", err)
	}
	// KerberosTime has whole seconds; the microseconds travel in cusec.
	if !part.CTime.Equal(n.ctime.Truncate(time.Second)) || part.Cusec != n.cusec {
		return fail(op, "", errors.New("AP-REP does not echo our authenticator: not from the service"))
	}
	n.ctx, n.ctxErr = newSecurityContext(true, n.key, n.subkey, part.Subkey, n.seq)
	return nil
}

// cutNegotiate takes the token out of "Negotiate <token>".
func cutNegotiate(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Negotiate") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// DER of the OIDs: Kerberos 5 (1.2.840.113554.1.2.2), Microsoft's legacy
// Kerberos 5 (1.2.840.48018.1.2.2) and SPNEGO (1.3.6.1.5.5.2).
var (
	krb5OID   = []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02}
	msKrb5OID = []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x82, 0xf7, 0x12, 0x01, 0x02, 0x02}
	spnegoOID = []byte{0x06, 0x06, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x02}
)

// The header is built on every request, so it is assembled in DER here
// rather than through reflection; the ticket's DER is kept from its issue.

// tlv encodes one DER element.
func tlv(tag byte, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := appendDERHeader(make([]byte, 0, n+6), tag, n)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// negotiateToken is the SPNEGO NegTokenInit (RFC 4178) carrying, as a
// GSS-API initial token (RFC 2743 3.1), AP-REQ ::= [APPLICATION 14]
// SEQUENCE { pvno [0] 5, msg-type [1] 14, ap-options [2] BIT STRING,
// ticket [3], authenticator [4] }, the authenticator encrypted in the
// session key (key usage 11). It is written back to front into one
// buffer: the kilobyte-long ticket sits eight DER levels deep, and nesting
// by copying copied it once per level.
func negotiateToken(t *Ticket, auth types.Authenticator, mutual, withSPNEGO, cbt bool) ([]byte, error) {
	tkt, err := t.ticketDER()
	if err != nil {
		return nil, err
	}
	ab, err := authenticatorDER(&auth, cbt)
	if err != nil {
		return nil, err
	}
	ed, err := t.encryptAuthenticator(ab)
	if err != nil {
		return nil, err
	}
	opts := []byte{0x03, 0x05, 0x00, 0, 0, 0, 0}
	if mutual {
		opts[3] = 0x80 >> flags.APOptionMutualRequired
	}
	r := newRevDER(len(tkt) + len(ed.Cipher) + 160)
	m := r.len()
	r.encryptedData(ed)
	r.wrap(0xa4, m)
	m = r.len()
	r.bytes(tkt)
	r.wrap(0xa3, m)
	m = r.len()
	r.bytes(opts)
	r.wrap(0xa2, m)
	r.bytes(apMsgType)
	r.bytes(apPVNO)
	r.wrap(0x30, 0)
	r.wrap(0x6e, 0) // AP-REQ
	r.bytes(tokAPReq)
	r.bytes(krb5OID)
	r.wrap(0x60, 0) // GSS-API framing
	if !withSPNEGO {
		return r.out(), nil
	}
	r.wrap(0x04, 0)
	r.wrap(0xa2, 0) // mechToken
	r.bytes(mechTypes)
	r.wrap(0x30, 0)
	r.wrap(0xa0, 0) // NegTokenInit
	r.bytes(spnegoOID)
	r.wrap(0x60, 0)
	return r.out(), nil
}

var (
	apPVNO    = []byte{0xa0, 0x03, 0x02, 0x01, 0x05}
	apMsgType = []byte{0xa1, 0x03, 0x02, 0x01, 0x0e}
	// mechTypes is the SPNEGO mechTypes [0] offering Kerberos and
	// Microsoft's OID for it.
	mechTypes = tlv(0xa0, tlv(0x30, krb5OID, msKrb5OID))
)

func appendDERHeader(out []byte, tag byte, n int) []byte {
	out = append(out, tag)
	switch {
	case n < 0x80:
		return append(out, byte(n))
	case n < 0x100:
		return append(out, 0x81, byte(n))
	case n < 0x10000:
		return append(out, 0x82, byte(n>>8), byte(n))
	case n < 0x1000000:
		return append(out, 0x83, byte(n>>16), byte(n>>8), byte(n))
	}
	return append(out, 0x84, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// gssInitDER frames a Kerberos message as a GSS-API token (RFC 2743 3.1).
func gssInitDER(tokID, msg []byte) []byte { return tlv(0x60, krb5OID, tokID, msg) }

// gssUnwrap checks the framing and token id and returns the message.
func gssUnwrap(tokID, b []byte) ([]byte, error) {
	var rv asn1.RawValue
	rest, err := asn1.Unmarshal(b, &rv)
	if err != nil || len(rest) > 0 || rv.Class != asn1.ClassApplication || rv.Tag != 0 {
		return nil, errors.New("not a GSS-API token")
	}
	in := rv.Bytes
	if len(in) < len(krb5OID)+2 || string(in[:len(krb5OID)]) != string(krb5OID) {
		return nil, errors.New("GSS-API token is not Kerberos 5")
	}
	in = in[len(krb5OID):]
	if in[0] != tokID[0] || in[1] != tokID[1] {
		return nil, fmt.Errorf("GSS-API token id %x, want %x", in[:2], tokID)
	}
	return in[2:], nil
}

// authenticatorDER encodes an Authenticator (RFC 4120 5.5.1) directly, as
// gokrb5's reflection-based marshalling would, at a fraction of its cost:
// the gateway encodes one per request. With cbt its authorization data is
// KERB_AP_OPTIONS_CBT's (adAPOptionsCBT); other authorization data, which
// we never send, falls back to gokrb5.
func authenticatorDER(a *types.Authenticator, cbt bool) ([]byte, error) {
	if len(a.AuthorizationData) > 0 {
		return a.Marshal()
	}
	r := newRevDER(192 + len(adAPOptionsCBT) + len(a.CRealm) + len(a.Cksum.Checksum) + len(a.SubKey.KeyValue) + 16*len(a.CName.NameString))
	top := r.len()
	if cbt {
		r.bytes(adAPOptionsCBT)
	}
	if a.SeqNumber != 0 {
		m := r.len()
		r.int(a.SeqNumber)
		r.wrap(0xa7, m)
	}
	if a.SubKey.KeyType != 0 || a.SubKey.KeyValue != nil {
		m := r.len()
		r.octetField(0xa1, a.SubKey.KeyValue)
		r.intField(0xa0, int64(a.SubKey.KeyType))
		r.wrap(0x30, m)
		r.wrap(0xa6, m)
	}
	m := r.len()
	r.string(a.CTime.UTC().Format("20060102150405Z"))
	r.wrap(0x18, m)
	r.wrap(0xa5, m)
	r.intField(0xa4, int64(a.Cusec))
	if a.Cksum.CksumType != 0 || a.Cksum.Checksum != nil {
		m := r.len()
		r.octetField(0xa1, a.Cksum.Checksum)
		r.intField(0xa0, int64(a.Cksum.CksumType))
		r.wrap(0x30, m)
		r.wrap(0xa3, m)
	}
	m = r.len()
	r.principal(a.CName)
	r.wrap(0xa2, m)
	m = r.len()
	r.string(a.CRealm)
	r.wrap(0x1b, m)
	r.wrap(0xa1, m)
	r.intField(0xa0, int64(a.AVNO))
	r.wrap(0x30, top)
	r.wrap(0x62, top)
	return r.out(), nil
}

// encryptedData writes EncryptedData (RFC 4120 5.2.9); kvno is left out
// when zero, as gokrb5's optional field is.
func (r *revDER) encryptedData(ed types.EncryptedData) {
	m := r.len()
	r.octetField(0xa2, ed.Cipher)
	if ed.KVNO != 0 {
		r.intField(0xa1, int64(ed.KVNO))
	}
	r.intField(0xa0, int64(ed.EType))
	r.wrap(0x30, m)
}

// intField writes [tag] INTEGER.
func (r *revDER) intField(tag byte, v int64) {
	m := r.len()
	r.int(v)
	r.wrap(tag, m)
}

// octetField writes [tag] OCTET STRING.
func (r *revDER) octetField(tag byte, b []byte) {
	m := r.len()
	r.bytes(b)
	r.wrap(0x04, m)
	r.wrap(tag, m)
}

// principal writes a PrincipalName SEQUENCE.
func (r *revDER) principal(p types.PrincipalName) {
	m := r.len()
	names := r.len()
	for i := len(p.NameString) - 1; i >= 0; i-- {
		n := r.len()
		r.string(p.NameString[i])
		r.wrap(0x1b, n)
	}
	r.wrap(0x30, names)
	r.wrap(0xa1, names)
	r.intField(0xa0, int64(p.NameType))
	r.wrap(0x30, m)
}
