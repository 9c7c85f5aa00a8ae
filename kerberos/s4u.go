package kerberos

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jcmturner/gofork/encoding/asn1"
	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/crypto/rfc4757"
	"github.com/jcmturner/gokrb5/v8/iana"
	"github.com/jcmturner/gokrb5/v8/iana/chksumtype"
	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/iana/flags"
	"github.com/jcmturner/gokrb5/v8/iana/keyusage"
	"github.com/jcmturner/gokrb5/v8/iana/msgtype"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/iana/patype"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"
)

// Protocol constants gokrb5 does not name.
const (
	flagCNameInAddlTkt = 14  // KDC option for S4U2Proxy (MS-SFU 2.2.3)
	paPACOptions       = 167 // PA-PAC-OPTIONS (MS-KILE 2.2.10)
	pacOptionRBCD      = 3   // resource-based-constrained-delegation bit of PA-PAC-OPTIONS
	keyUsagePAForUser  = 17  // MS-SFU 2.2.1: the PA-FOR-USER checksum
	paS4UX509User      = 130 // PA-S4U-X509-USER (MS-SFU 2.2.2)
	keyUsageS4UReq     = 26  // its checksum in the request
	keyUsageS4URep     = 27  // its checksum in the reply (with the option below)
	s4uUseReplyKeyUse  = 0x20000000
	authPackage        = "Kerberos"
)

// paForUser is the PA-FOR-USER padata of S4U2Self (MS-SFU 2.2.1).
type paForUser struct {
	UserName    types.PrincipalName `asn1:"explicit,tag:0"`
	UserRealm   string              `asn1:"generalstring,explicit,tag:1"`
	Cksum       types.Checksum      `asn1:"explicit,tag:2"`
	AuthPackage string              `asn1:"generalstring,explicit,tag:3"`
}

// paForUserData is the PA-FOR-USER padata for a user of realm, keyed with
// the session key of the TGT (or referral) it goes with.
func paForUserData(user types.PrincipalName, realm string, sessionKey types.EncryptionKey) (types.PAData, error) {
	pfu, err := newPAForUser(user, realm, sessionKey)
	if err != nil {
		return types.PAData{}, err
	}
	b, err := pfu.Marshal()
	if err != nil {
		return types.PAData{}, err
	}
	return types.PAData{PADataType: patype.PA_FOR_USER, PADataValue: b}, nil
}

// newPAForUser builds PA-FOR-USER for a user, its checksum keyed with the
// TGT session key: HMAC-MD5 (KERB_CHECKSUM_HMAC_MD5, key usage 17) over the
// name type (4 bytes, little-endian), the name components, the realm and
// "Kerberos", whatever the session key's type.
func newPAForUser(user types.PrincipalName, realm string, sessionKey types.EncryptionKey) (paForUser, error) {
	data := make([]byte, 4, 64)
	binary.LittleEndian.PutUint32(data, uint32(user.NameType))
	for _, s := range user.NameString {
		data = append(data, s...)
	}
	data = append(data, realm...)
	data = append(data, authPackage...)
	sum, err := rfc4757.Checksum(sessionKey.KeyValue, keyUsagePAForUser, data)
	if err != nil {
		return paForUser{}, err
	}
	return paForUser{
		UserName:    user,
		UserRealm:   realm,
		Cksum:       types.Checksum{CksumType: chksumtype.KERB_CHECKSUM_HMAC_MD5, Checksum: sum},
		AuthPackage: authPackage,
	}, nil
}

// Marshal encodes PA-FOR-USER in DER.
func (p paForUser) Marshal() ([]byte, error) { return asn1.Marshal(p) }

// Unmarshal decodes PA-FOR-USER.
func (p *paForUser) Unmarshal(b []byte) error {
	rest, err := asn1.Unmarshal(b, p)
	if err == nil && len(rest) > 0 {
		err = errors.New("trailing data after PA-FOR-USER")
	}
	return err
}

// s4uUserID is the user-id of PA-S4U-X509-USER (MS-SFU 2.2.2).
type s4uUserID struct {
	Nonce   int                 `asn1:"explicit,tag:0"` // the nonce of the request body
	CName   types.PrincipalName `asn1:"explicit,optional,tag:1"`
	CRealm  string              `asn1:"generalstring,explicit,tag:2"`
	Options asn1.BitString      `asn1:"explicit,optional,tag:4"`
}

// s4uX509User is PA-S4U-X509-USER: the user-id and a checksum over its
// DER, keyed with the TGT session key. Windows DCs patched for
// CVE-2026-20849 prefer it to PA-FOR-USER, whose HMAC-MD5 checksum is weak.
type s4uX509User struct {
	UserID s4uUserID      `asn1:"explicit,tag:0"`
	Cksum  types.Checksum `asn1:"explicit,tag:1"`
}

// newS4UX509User builds PA-S4U-X509-USER for the request nonce. It asks
// the KDC to sign its echo with key usage 27 (USE_REPLY_KEY_USAGE).
func newS4UX509User(user types.PrincipalName, realm string, nonce int, sessionKey types.EncryptionKey) (s4uX509User, error) {
	opts := asn1.BitString{Bytes: make([]byte, 4), BitLength: 32}
	binary.BigEndian.PutUint32(opts.Bytes, s4uUseReplyKeyUse)
	uid := s4uUserID{Nonce: nonce, CName: user, CRealm: realm, Options: opts}
	sum, err := s4uChecksum(uid, sessionKey, keyUsageS4UReq)
	if err != nil {
		return s4uX509User{}, err
	}
	return s4uX509User{UserID: uid, Cksum: sum}, nil
}

func s4uChecksum(uid s4uUserID, key types.EncryptionKey, usage uint32) (types.Checksum, error) {
	b, err := asn1.Marshal(uid)
	if err != nil {
		return types.Checksum{}, err
	}
	et, err := crypto.GetEtype(key.KeyType)
	if err != nil {
		return types.Checksum{}, err
	}
	sum, err := et.GetChecksumHash(key.KeyValue, b, usage)
	if err != nil {
		return types.Checksum{}, err
	}
	return types.Checksum{CksumType: et.GetHashID(), Checksum: sum}, nil
}

// Marshal encodes PA-S4U-X509-USER in DER.
func (p s4uX509User) Marshal() ([]byte, error) { return asn1.Marshal(p) }

// Unmarshal decodes PA-S4U-X509-USER.
func (p *s4uX509User) Unmarshal(b []byte) error {
	rest, err := asn1.Unmarshal(b, p)
	if err == nil && len(rest) > 0 {
		err = errors.New("trailing data after PA-S4U-X509-USER")
	}
	return err
}

// isAES reports whether a key type is AES (the condition for PA-S4U-X509-USER).
func isAES(keyType int32) bool {
	return keyType == etypeID.AES128_CTS_HMAC_SHA1_96 || keyType == etypeID.AES256_CTS_HMAC_SHA1_96 ||
		keyType == etypeID.AES128_CTS_HMAC_SHA256_128 || keyType == etypeID.AES256_CTS_HMAC_SHA384_192
}

// checkS4UEcho verifies the PA-S4U-X509-USER a KDC may return in an
// S4U2Self reply: same nonce, checksum with key usage 27. Samba 4.17 and
// older DCs return none, which is accepted.
func checkS4UEcho(padata []types.PAData, nonce int, key types.EncryptionKey) error {
	for _, pa := range padata {
		if pa.PADataType != paS4UX509User {
			continue
		}
		var echo s4uX509User
		if err := echo.Unmarshal(pa.PADataValue); err != nil {
			return fmt.Errorf("%w: PA-S4U-X509-USER in reply: %v", ErrBadReply, err)
		}
		if echo.UserID.Nonce != nonce {
			return fmt.Errorf("%w: PA-S4U-X509-USER nonce mismatch", ErrBadReply)
		}
		want, err := s4uChecksum(echo.UserID, key, keyUsageS4URep)
		if err != nil || !hmacEqual(want.Checksum, echo.Cksum.Checksum) {
			return fmt.Errorf("%w: PA-S4U-X509-USER checksum does not verify", ErrBadReply)
		}
	}
	return nil
}

func hmacEqual(a, b []byte) bool { return len(a) == len(b) && subtle.ConstantTimeCompare(a, b) == 1 }

// paPACOptions is PA-PAC-OPTIONS ::= SEQUENCE { options [0] KerberosFlags }.
type paPACOptionsValue struct {
	Options asn1.BitString `asn1:"explicit,tag:0"`
}

// ParseUser turns the user of an S4U2Self request into a principal name:
// "alice" and "alice@REALM" (the realm exactly as configured) are
// NT_PRINCIPAL names in the service's realm; any other "x@y", such as a UPN
// "alice@corp.example.com", is an NT_ENTERPRISE name the KDC resolves.
// The client name in the resulting tickets is whatever the KDC puts there:
// Samba 4.17 keeps the enterprise form.
func ParseUser(user, realm string) (types.PrincipalName, error) {
	user = strings.TrimSpace(user)
	if user == "" || strings.ContainsAny(user, "\x00\r\n") {
		return types.PrincipalName{}, fmt.Errorf("invalid user name %q", user)
	}
	name, suffix, hasAt := strings.Cut(user, "@")
	switch {
	case !hasAt:
		return types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: []string{user}}, nil
	case suffix == realm && name != "":
		return types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: []string{name}}, nil
	case name != "" && suffix != "":
		return types.PrincipalName{NameType: nametype.KRB_NT_ENTERPRISE, NameString: []string{user}}, nil
	}
	return types.PrincipalName{}, fmt.Errorf("invalid user name %q", user)
}

// S4U2Self asks the KDC for a ticket from user to the service account
// itself (the evidence ticket). user is a sAMAccountName, user@REALM or a
// UPN. The evidence is forwardable only when the service account has
// TRUSTED_TO_AUTH_FOR_DELEGATION and the user is not sensitive.
//
// A user of another realm, named user@REALM where REALM is a realm of the
// krb5 configuration other than the service's (a domain that trusts the
// service's), is impersonated across the trust (MS-SFU 3.1.5.1.1.2): a
// cross-realm TGT from the service's KDC, S4U2Self at the user's realm's
// KDC, which answers with a referral back, and S4U2Self with that referral
// at the service's KDC, which issues the evidence.
func (c *Client) S4U2Self(ctx context.Context, user string) (*Ticket, error) {
	const op = "S4U2Self"
	if name, realm, ok := strings.Cut(user, "@"); ok && name != "" && !EqualNames(realm, c.realm) && c.knowsRealm(realm) {
		uname := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: []string{name}}
		urealm := strings.ToUpper(realm)
		return c.withTGT(ctx, func(tgt *Ticket) (*Ticket, error) { return c.s4u2SelfCrossRealm(ctx, tgt, user, uname, urealm) })
	}
	uname, err := ParseUser(user, c.realm)
	if err != nil {
		return nil, fail(op, user, err)
	}
	return c.withTGT(ctx, func(tgt *Ticket) (*Ticket, error) { return c.s4u2Self(ctx, tgt, user, uname) })
}

// knowsRealm reports whether the krb5 configuration lists realm.
func (c *Client) knowsRealm(realm string) bool {
	for _, r := range c.cfg.Realms {
		if EqualNames(r.Realm, realm) {
			return true
		}
	}
	return false
}

// s4u2SelfCrossRealm impersonates a user of urealm, in three TGS exchanges.
func (c *Client) s4u2SelfCrossRealm(ctx context.Context, tgt *Ticket, user string, uname types.PrincipalName, urealm string) (*Ticket, error) {
	// 1. A TGT for the user's realm from our KDC (krbtgt/URELM@OURS).
	krbtgt := types.PrincipalName{NameType: nametype.KRB_NT_SRV_INST, NameString: []string{"krbtgt", urealm}}
	body, err := c.body(krbtgt, flags.Forwardable)
	if err != nil {
		return nil, fail("S4U2Self", user, err)
	}
	xtgt, _, err := c.tgsExchangeAt(ctx, "cross-realm TGT", "krbtgt/"+urealm, c.realm, tgt, body, nil, false)
	if err != nil {
		return nil, err
	}
	// 2. S4U2Self at the user's KDC, for ourselves named as an enterprise
	// principal of our realm: it answers with a referral TGT back to our
	// realm (krbtgt/OURS@URELM) that speaks for the user.
	pa, err := paForUserData(uname, urealm, xtgt.SessionKey)
	if err != nil {
		return nil, fail("S4U2Self", user, err)
	}
	self := types.PrincipalName{NameType: nametype.KRB_NT_ENTERPRISE, NameString: []string{c.cname.PrincipalNameString() + "@" + c.realm}}
	body, err = c.body(self, flags.Forwardable, flags.Canonicalize)
	if err != nil {
		return nil, fail("S4U2Self", user, err)
	}
	body.Realm = urealm
	ref, _, err := c.tgsExchangeAt(ctx, "S4U2Self at "+urealm, user, urealm, xtgt, body,
		[]types.PAData{pa}, true)
	if err != nil {
		return nil, err
	}
	// 3. S4U2Self at our KDC with the referral as the TGT.
	if pa, err = paForUserData(uname, urealm, ref.SessionKey); err != nil {
		return nil, fail("S4U2Self", user, err)
	}
	if body, err = c.body(c.cname, flags.Forwardable, flags.Canonicalize); err != nil {
		return nil, fail("S4U2Self", user, err)
	}
	t, _, err := c.tgsExchangeAt(ctx, "S4U2Self at "+c.realm+" with "+urealm+"'s referral", user, c.realm, ref, body,
		[]types.PAData{pa}, false)
	if err != nil {
		return nil, err
	}
	if !t.IsFor(user) && !(samePrincipal(t.Client, uname) && EqualNames(t.ClientRealm, urealm)) {
		return nil, fail("S4U2Self", user, fmt.Errorf("%w: ticket is for %s, not %s", ErrBadReply, t.ClientName(), user))
	}
	return t, nil
}

// withTGT runs a TGS exchange with the service TGT. When the KDC rejects
// the TGT itself (its krbtgt key changed, it was revoked), the TGT is
// dropped, the client logs in again once and the exchange runs once more:
// otherwise every request would fail until the TGT's own end.
func (c *Client) withTGT(ctx context.Context, exchange func(tgt *Ticket) (*Ticket, error)) (*Ticket, error) {
	tgt, err := c.TGT(ctx)
	if err != nil {
		return nil, err
	}
	t, err := exchange(tgt)
	var ke *KDCError
	if err == nil || !errors.As(err, &ke) || !rejectsTGT(ke.Code) || c.creds == nil {
		return t, err
	}
	c.dropTGT(tgt)
	if tgt, err = c.TGT(ctx); err != nil {
		return nil, err
	}
	return exchange(tgt)
}

func (c *Client) s4u2Self(ctx context.Context, tgt *Ticket, user string, uname types.PrincipalName) (*Ticket, error) {
	const op = "S4U2Self"
	pa, err := paForUserData(uname, c.realm, tgt.SessionKey)
	if err != nil {
		return nil, fail(op, user, err)
	}
	body, err := c.body(c.cname, flags.Forwardable, flags.Renewable, flags.Canonicalize)
	if err != nil {
		return nil, fail(op, user, err)
	}
	padata := []types.PAData{pa}
	withX509 := isAES(tgt.SessionKey.KeyType) && !c.noX509.Load()
	if withX509 {
		x, err := newS4UX509User(uname, c.realm, body.Nonce, tgt.SessionKey)
		if err != nil {
			return nil, fail(op, user, err)
		}
		xb, err := x.Marshal()
		if err != nil {
			return nil, fail(op, user, err)
		}
		padata = append(padata, types.PAData{PADataType: paS4UX509User, PADataValue: xb})
	}
	t, rep, err := c.tgsExchange(ctx, op, user, tgt, body, padata)
	if withX509 && errors.Is(err, ErrPADataTypeNotSupported) {
		// An older KDC: PA-FOR-USER alone, and remember not to try again.
		c.noX509.Store(true)
		t, rep, err = c.tgsExchange(ctx, op, user, tgt, body, padata[:1])
	}
	if err != nil {
		return nil, err
	}
	if err := checkS4UEcho(rep.PAData, body.Nonce, tgt.SessionKey); err != nil {
		return nil, fail(op, user, err)
	}
	// The reply names the user (canonicalized): it must be the user asked for.
	if !t.IsFor(user) {
		return nil, fail(op, user, fmt.Errorf("%w: ticket is for %s, not %s", ErrBadReply, t.ClientName(), user))
	}
	return t, nil
}

// S4U2Proxy trades an evidence ticket (from S4U2Self) for a ticket from the
// same user to spn ("http/mail.corp.example.com"), by classic constrained
// delegation (msDS-AllowedToDelegateTo on the service account) or
// resource-based (msDS-AllowedToActOnBehalfOfOtherIdentity on the target):
// the request always carries PA-PAC-OPTIONS with the resource-based bit,
// as Windows clients send it, and the KDC picks.
//
// Evidence that is not forwardable is sent all the same: a Windows KDC
// accepts it for resource-based delegation (MS-SFU 3.2.5.2.2; the ticket
// it returns is then not forwardable), though classic delegation, and
// Samba 4.22 for both kinds, refuse it with KDC_ERR_BADOPTION. That
// refusal is reported as ErrEvidenceNotForwardable, carrying the
// *KDCError, so that the cause (a sensitive user, a service account
// without TRUSTED_TO_AUTH_FOR_DELEGATION) is what the error says.
func (c *Client) S4U2Proxy(ctx context.Context, evidence *Ticket, spn string) (*Ticket, error) {
	const op = "S4U2Proxy"
	if evidence == nil {
		return nil, fail(op, spn, errors.New("no evidence ticket"))
	}
	sname, err := parseSPN(spn)
	if err != nil {
		return nil, fail(op, spn, err)
	}
	t, err := c.withTGT(ctx, func(tgt *Ticket) (*Ticket, error) { return c.s4u2Proxy(ctx, tgt, evidence, spn, sname) })
	var ke *KDCError
	if err != nil && !evidence.Forwardable() && errors.As(err, &ke) && ke.Code == CodeBadOption {
		return nil, fail(op, spn, fmt.Errorf("%w: the ticket of %s to %s lacks FORWARDABLE (service account without TRUSTED_TO_AUTH_FOR_DELEGATION, a TGT that is not forwardable, or a sensitive user), and the KDC refused it: %w",
			ErrEvidenceNotForwardable, evidence.ClientName(), evidence.ServerName(), ke))
	}
	return t, err
}

func (c *Client) s4u2Proxy(ctx context.Context, tgt, evidence *Ticket, spn string, sname types.PrincipalName) (*Ticket, error) {
	const op = "S4U2Proxy"
	body, err := c.body(sname, flags.Forwardable, flagCNameInAddlTkt)
	if err != nil {
		return nil, fail(op, spn, err)
	}
	// The evidence goes in additional-tickets before the body checksum is computed.
	body.AdditionalTickets = []messages.Ticket{evidence.Ticket}
	opts := types.NewKrbFlags()
	types.SetFlag(&opts, pacOptionRBCD)
	pacOpts, err := asn1.Marshal(paPACOptionsValue{Options: opts})
	if err != nil {
		return nil, fail(op, spn, err)
	}
	t, _, err := c.tgsExchange(ctx, op, spn, tgt, body, []types.PAData{{PADataType: paPACOptions, PADataValue: pacOpts}})
	if err != nil {
		return nil, err
	}
	// The KDC copies the client from the evidence: it must be the same, to the byte.
	if !samePrincipal(t.Client, evidence.Client) || t.ClientRealm != evidence.ClientRealm {
		return nil, fail(op, spn, fmt.Errorf("%w: ticket is for %s, evidence was for %s", ErrBadReply, t.ClientName(), evidence.ClientName()))
	}
	return t, nil
}

// Impersonate does S4U2Self for user, then S4U2Proxy to spn.
func (c *Client) Impersonate(ctx context.Context, user, spn string) (*Ticket, error) {
	ev, err := c.S4U2Self(ctx, user)
	if err != nil {
		return nil, err
	}
	return c.S4U2Proxy(ctx, ev, spn)
}

// parseSPN turns "http/mail.corp" into an NT_SRV_INST principal name.
func parseSPN(spn string) (types.PrincipalName, error) {
	if at := strings.IndexByte(spn, '@'); at >= 0 {
		spn = spn[:at]
	}
	parts := strings.Split(spn, "/")
	if len(parts) < 2 {
		return types.PrincipalName{}, fmt.Errorf("SPN %q is not service/host", spn)
	}
	for _, p := range parts {
		if p == "" {
			return types.PrincipalName{}, fmt.Errorf("SPN %q has an empty part", spn)
		}
	}
	return types.PrincipalName{NameType: nametype.KRB_NT_SRV_INST, NameString: parts}, nil
}

// body is a TGS-REQ body for sname with the given KDC options.
func (c *Client) body(sname types.PrincipalName, options ...int) (messages.KDCReqBody, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(math.MaxInt32))
	if err != nil {
		return messages.KDCReqBody{}, err
	}
	now := c.now().UTC()
	life := c.cfg.LibDefaults.TicketLifetime
	if life <= 0 {
		life = 24 * time.Hour
	}
	b := messages.KDCReqBody{
		KDCOptions: types.NewKrbFlags(),
		Realm:      c.realm,
		SName:      sname,
		Till:       now.Add(life).Truncate(time.Second),
		Nonce:      int(n.Int64()),
		EType:      c.etypes(c.cfg.LibDefaults.DefaultTGSEnctypeIDs),
	}
	for _, o := range options {
		types.SetFlag(&b.KDCOptions, o)
		if o == flags.Renewable {
			b.RTime = now.Add(7 * 24 * time.Hour).Truncate(time.Second)
		}
	}
	return b, nil
}

// tgsRequest builds the TGS-REQ: the authenticator's checksum covers the
// final body (key usage 6), so every body field must be set before this.
func (c *Client) tgsRequest(tgt *Ticket, body messages.KDCReqBody, extra []types.PAData) (messages.TGSReq, error) {
	// A TGT from a credential cache was never checked at login.
	if err := c.strongEnough(tgt.SessionKey.KeyType, "the TGT's session key"); err != nil {
		return messages.TGSReq{}, err
	}
	bodyBytes, err := body.Marshal()
	if err != nil {
		return messages.TGSReq{}, err
	}
	et, err := crypto.GetEtype(tgt.SessionKey.KeyType)
	if err != nil {
		return messages.TGSReq{}, err
	}
	sum, err := et.GetChecksumHash(tgt.SessionKey.KeyValue, bodyBytes, keyusage.TGS_REQ_PA_TGS_REQ_AP_REQ_AUTHENTICATOR_CHKSUM)
	if err != nil {
		return messages.TGSReq{}, err
	}
	auth, err := types.NewAuthenticator(c.realm, c.cname)
	if err != nil {
		return messages.TGSReq{}, err
	}
	auth.CTime, auth.Cusec = tgt.authTime(c.now())
	auth.Cksum = types.Checksum{CksumType: et.GetHashID(), Checksum: sum}
	ap, err := messages.NewAPReq(tgt.Ticket, tgt.SessionKey, auth) // key usage 7 for a krbtgt ticket
	if err != nil {
		return messages.TGSReq{}, err
	}
	apBytes, err := ap.Marshal()
	if err != nil {
		return messages.TGSReq{}, err
	}
	pa := append([]types.PAData{{PADataType: patype.PA_TGS_REQ, PADataValue: apBytes}}, extra...)
	return messages.TGSReq{KDCReqFields: messages.KDCReqFields{
		PVNO: iana.PVNO, MsgType: msgtype.KRB_TGS_REQ, PAData: pa, ReqBody: body}}, nil
}

// tgsExchange sends a TGS-REQ and verifies the reply: decryption with the
// TGT session key (usage 8), the nonce, and the server name.
func (c *Client) tgsExchange(ctx context.Context, op, target string, tgt *Ticket, body messages.KDCReqBody, extra []types.PAData) (*Ticket, *messages.TGSRep, error) {
	return c.tgsExchangeAt(ctx, op, target, c.realm, tgt, body, extra, false)
}

// tgsExchangeAt is tgsExchange with a KDC of realm; referral accepts a
// ticket to krbtgt/<our realm> in place of the server asked for.
func (c *Client) tgsExchangeAt(ctx context.Context, op, target, realm string, tgt *Ticket, body messages.KDCReqBody, extra []types.PAData, referral bool) (*Ticket, *messages.TGSRep, error) {
	req, err := c.tgsRequest(tgt, body, extra)
	if err != nil {
		return nil, nil, fail(op, target, err)
	}
	b, err := req.Marshal()
	if err != nil {
		return nil, nil, fail(op, target, err)
	}
	raw, kdc, err := c.deliver(ctx, realm, b)
	if err != nil {
		return nil, nil, fail(op, target, err)
	}
	if kerr, ok := asKRBError(raw); ok {
		return nil, nil, kdcError(op, target, kdc, kerr, c.now())
	}
	var rep messages.TGSRep
	if referral {
		want := types.PrincipalName{NameType: nametype.KRB_NT_SRV_INST, NameString: []string{"krbtgt", c.realm}}
		body.SName = want // what a referral answers with, checked as if asked for
	}
	t, err := verifyTGSRep(raw, &rep, tgt.SessionKey, body, c.now(), op, target)
	if err != nil {
		return nil, nil, failKDC(op, target, kdc, err)
	}
	if err := c.strongEnough(t.Ticket.EncPart.EType, "the ticket to "+t.ServerName()); err != nil {
		return nil, nil, failKDC(op, target, kdc, err)
	}
	if err := c.strongEnough(t.SessionKey.KeyType, "the session key of the ticket to "+t.ServerName()); err != nil {
		return nil, nil, failKDC(op, target, kdc, err)
	}
	return t, &rep, nil
}

func verifyTGSRep(raw []byte, rep *messages.TGSRep, key types.EncryptionKey, body messages.KDCReqBody, now time.Time, op, target string) (*Ticket, error) {
	if err := safely(func() error { return rep.Unmarshal(raw) }); err != nil {
		return nil, fail(op, target, fmt.Errorf("%w: %v", ErrBadReply, err))
	}
	if err := safely(func() error { return rep.DecryptEncPart(key) }); err != nil {
		return nil, fail(op, target, fmt.Errorf("%w: %v", ErrBadReply, err))
	}
	p := rep.DecryptedEncPart
	switch {
	case p.Nonce != body.Nonce:
		return nil, fail(op, target, fmt.Errorf("%w: nonce mismatch", ErrBadReply))
	case !sameName(p.SName, body.SName) || !sameName(rep.Ticket.SName, p.SName):
		return nil, fail(op, target, fmt.Errorf("%w: ticket is for %s, asked for %s", ErrBadReply,
			p.SName.PrincipalNameString(), body.SName.PrincipalNameString()))
	case !EqualNames(p.SRealm, body.Realm):
		return nil, fail(op, target, fmt.Errorf("%w: ticket realm %s, asked for %s", ErrBadReply, p.SRealm, body.Realm))
	case !p.EndTime.After(now):
		return nil, fail(op, target, fmt.Errorf("%w: ticket already expired", ErrBadReply))
	}
	return ticketFrom(rep.KDCRepFields), nil
}

// EqualNames compares two account names as AD does: both upper-cased rune
// by rune (Windows' RtlUpcaseUnicodeString; Samba's casefold), never
// case-folded. A rune is upper-cased only when it is the lower case of its
// upper case, as in AD's table: "\u017f" (long s), "\u0131" (dotless i),
// "\u00b5" (micro sign), "\u01c5" (title-case DZ) and "\u1e9b" keep their
// own spelling, while Unicode's simple mapping (strings.ToUpper) makes them
// "S", "I", Greek "M", "\u01c4" and "\u1e60", joining accounts that the lab's
// Samba DC keeps apart. strings.EqualFold goes further still and takes the
// Kelvin sign U+212A for "k". EqualNames(a, b) is UpperName(a) == UpperName(b).
func EqualNames(a, b string) bool {
	for a != "" && b != "" {
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if ra == utf8.RuneError || rb == utf8.RuneError {
			// Invalid bytes are compared as bytes, never as U+FFFD.
			if a[:na] != b[:nb] {
				return false
			}
		} else if ra != rb && upperRune(ra) != upperRune(rb) {
			return false
		}
		a, b = a[na:], b[nb:]
	}
	return a == "" && b == ""
}

// UpperName upper-cases an account name as EqualNames compares it: a map
// key under which the spellings of one name meet and no two of AD's
// accounts do.
func UpperName(s string) string {
	for i, r := range s {
		if r != utf8.RuneError && upperRune(r) != r {
			var b strings.Builder
			b.Grow(len(s))
			b.WriteString(s[:i])
			for rest := s[i:]; rest != ""; {
				r, n := utf8.DecodeRuneInString(rest)
				if r == utf8.RuneError {
					b.WriteString(rest[:n]) // invalid bytes stay as they are
				} else {
					b.WriteRune(upperRune(r))
				}
				rest = rest[n:]
			}
			return b.String()
		}
	}
	return s
}

// upperRune is r's upper case when r is that upper case's lower case, else
// r itself.
func upperRune(r rune) rune {
	u := unicode.ToUpper(r)
	if u != r && unicode.ToLower(u) != r {
		return r
	}
	return u
}

// sameName compares principal names component by component with EqualNames.
func sameName(a, b types.PrincipalName) bool {
	if len(a.NameString) != len(b.NameString) {
		return false
	}
	for i := range a.NameString {
		if !EqualNames(a.NameString[i], b.NameString[i]) {
			return false
		}
	}
	return true
}

// samePrincipal compares principal names exactly.
func samePrincipal(a, b types.PrincipalName) bool {
	if len(a.NameString) != len(b.NameString) {
		return false
	}
	for i := range a.NameString {
		if a.NameString[i] != b.NameString[i] {
			return false
		}
	}
	return true
}

// IsFor reports whether the ticket speaks for user, given as S4U2Self
// takes it: "alice" or "alice@REALM" must be the ticket's client name in
// the ticket's realm; a UPN must be the ticket's enterprise name (Samba
// keeps it). A UPN that the KDC resolved to an account name (Windows
// canonicalizes) cannot be checked by name: the KDC's mapping is taken.
// Names compare as AD compares them (upper-cased, never case-folded).
func (t *Ticket) IsFor(user string) bool {
	if len(t.Client.NameString) != 1 {
		return false
	}
	cname := t.Client.NameString[0]
	name, suffix, hasAt := strings.Cut(user, "@")
	switch {
	case !hasAt:
		return EqualNames(cname, user)
	case EqualNames(cname, user):
		return true // the enterprise name itself
	case EqualNames(suffix, t.ClientRealm):
		return EqualNames(cname, name)
	}
	return t.Client.NameType != nametype.KRB_NT_ENTERPRISE && !strings.Contains(cname, "@")
}

// ServiceTicket asks the KDC for an ordinary ticket from the service
// account itself to principal: an SPN ("http/mail.corp.example.com") or an
// account name ("EXCHASA$"). Whoever holds the target's current key can
// open it, which is how a caller proves which password AD holds for an
// account (OpensWith) without a logon attempt as that account.
func (c *Client) ServiceTicket(ctx context.Context, principal string) (*Ticket, error) {
	const op = "TGS exchange"
	sname := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: []string{principal}}
	if strings.Contains(principal, "/") {
		var err error
		if sname, err = parseSPN(principal); err != nil {
			return nil, fail(op, principal, err)
		}
	}
	return c.withTGT(ctx, func(tgt *Ticket) (*Ticket, error) {
		body, err := c.body(sname, flags.Canonicalize)
		if err != nil {
			return nil, fail(op, principal, err)
		}
		t, _, err := c.tgsExchange(ctx, op, principal, tgt, body, nil)
		return t, err
	})
}

// OpensWith reports whether a key of kt opens the ticket's encrypted part:
// the keytab holds the key the KDC used, the target account's current one.
func (t *Ticket) OpensWith(kt *keytab.Keytab) bool {
	if kt == nil {
		return false
	}
	for _, e := range kt.Entries {
		if e.Key.KeyType != t.Ticket.EncPart.EType {
			continue
		}
		if err := safely(func() error {
			_, err := crypto.DecryptEncPart(t.Ticket.EncPart, e.Key, keyusage.KDC_REP_TICKET)
			return err
		}); err == nil {
			return true
		}
	}
	return false
}
