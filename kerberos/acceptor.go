package kerberos

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"time"

	"github.com/jcmturner/gofork/encoding/asn1"
	"github.com/jcmturner/gokrb5/v8/asn1tools"
	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/gssapi"
	"github.com/jcmturner/gokrb5/v8/iana"
	"github.com/jcmturner/gokrb5/v8/iana/asnAppTag"
	"github.com/jcmturner/gokrb5/v8/iana/flags"
	"github.com/jcmturner/gokrb5/v8/iana/keyusage"
	"github.com/jcmturner/gokrb5/v8/iana/msgtype"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/service"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"
)

// Acceptor is the server side: it validates "Authorization: Negotiate"
// headers with a keytab, for tests and for callers who run their own
// backend behind the gateway. It uses gokrb5's AP-REQ verification, whose
// replay cache is process-wide: the same header is accepted only once.
type Acceptor struct {
	// Keytab holds the service key (e.g. from KeytabFromPassword, or
	// samba-tool domain exportkeytab, or ktpass).
	Keytab *keytab.Keytab
	// Principal is the keytab entry to decrypt with when it is not the
	// ticket's server name: the ASA's "EXCHASA$" for tickets to
	// http/mail.corp.example.com.
	Principal string
	// MaxClockSkew defaults to 5 minutes.
	MaxClockSkew time.Duration
	// TokenChecking is what the Acceptor requires of a token's channel
	// binding, as IIS's extendedProtection tokenChecking (None, the zero
	// value, ignores it). ChannelBinding is the binding of the connection
	// the tokens come on: TLSServerEndPoint of the acceptor's own
	// certificate. A token that fails the check fails with
	// ErrChannelBinding.
	TokenChecking  TokenChecking
	ChannelBinding ChannelBinding
}

// Identity is who a Negotiate header authenticated.
type Identity struct {
	User   string // the ticket's client name, e.g. alice, or alice@corp.example.com (an enterprise name)
	Realm  string
	Groups []string // group SIDs from the PAC, when the ticket carries one
	// Account and SID are the account the ticket's PAC names (its logon
	// information: the account name, and the domain's SID with the user's
	// RID), which is what Windows builds a logon token from; "" when the
	// ticket carries no PAC. User may be another form of the same account's
	// name: an S4U2Self by UPN gives a ticket that Samba's KDC names by the
	// UPN.
	Account, SID string
	// StartTime and EndTime bound the ticket's validity. The AP-REQ is
	// accepted within MaxClockSkew of them; a server that wants no
	// tolerance past the end compares EndTime with its own clock.
	StartTime, EndTime time.Time
	// ReplyHeader, when the client asked for mutual authentication, is the
	// WWW-Authenticate value to send back: "Negotiate <AP-REP>".
	ReplyHeader string
}

// Accept validates an Authorization header value.
func (a *Acceptor) Accept(authorization string) (*Identity, error) {
	id, _, err := a.accept("accept", authorization, false)
	return id, err
}

// AcceptContext validates an Authorization header and, when the client
// asked for mutual authentication, sets up a security context to seal
// messages with: the AP-REP in Identity.ReplyHeader then carries a fresh
// acceptor subkey and sequence number, as Windows' does. Without mutual
// authentication the context is nil.
func (a *Acceptor) AcceptContext(authorization string) (*Identity, *SecurityContext, error) {
	return a.accept("accept context", authorization, true)
}

func (a *Acceptor) accept(op, authorization string, withContext bool) (*Identity, *SecurityContext, error) {
	id, ap, err := a.verify(op, authorization)
	if err != nil {
		return nil, nil, err
	}
	if !mutualRequested(ap) {
		return id, nil, nil
	}
	part := messages.EncAPRepPart{CTime: ap.Authenticator.CTime, Cusec: ap.Authenticator.Cusec}
	if withContext {
		sk := ap.Ticket.DecryptedEncPart.Key
		sub := make([]byte, len(sk.KeyValue))
		if _, err := rand.Read(sub); err != nil {
			return nil, nil, fail(op, id.User, err)
		}
		seq, err := rand.Int(rand.Reader, big.NewInt(1<<30))
		if err != nil {
			return nil, nil, fail(op, id.User, err)
		}
		part.Subkey = types.EncryptionKey{KeyType: sk.KeyType, KeyValue: sub}
		part.SequenceNumber = seq.Int64()
	}
	if id.ReplyHeader, err = mutualReply(ap, part); err != nil {
		return nil, nil, fail(op, id.User, err)
	}
	if !withContext {
		return id, nil, nil
	}
	ctx, err := newSecurityContext(false, ap.Ticket.DecryptedEncPart.Key, ap.Authenticator.SubKey, part.Subkey, part.SequenceNumber)
	if err != nil {
		return nil, nil, fail(op, id.User, err)
	}
	return id, ctx, nil
}

// verify checks the AP-REQ in an Authorization header.
func (a *Acceptor) verify(op, authorization string) (*Identity, messages.APReq, error) {
	var ap messages.APReq
	b64, ok := cutNegotiate(authorization)
	if !ok {
		return nil, ap, fail(op, "", errors.New("not a Negotiate header with a token"))
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, ap, fail(op, "", err)
	}
	var tok spnego.SPNEGOToken
	if err := tok.Unmarshal(raw); err != nil || !tok.Init {
		return nil, ap, fail(op, "", fmt.Errorf("not an SPNEGO NegTokenInit: %v", err))
	}
	body, err := gssUnwrap(tokAPReq, tok.NegTokenInit.MechTokenBytes)
	if err != nil {
		return nil, ap, fail(op, "", err)
	}
	if err := ap.Unmarshal(body); err != nil {
		return nil, ap, fail(op, "", err)
	}
	skew := a.MaxClockSkew
	if skew <= 0 {
		skew = 5 * time.Minute
	}
	opts := []func(*service.Settings){service.MaxClockSkew(skew)}
	if a.Principal != "" {
		opts = append(opts, service.KeytabPrincipal(a.Principal))
	}
	ok, creds, err := service.VerifyAPREQ(&ap, service.NewSettings(a.Keytab, opts...))
	if err != nil || !ok {
		var kerr messages.KRBError
		if errors.As(err, &kerr) {
			return nil, ap, kdcError(op, "", "", kerr, time.Now())
		}
		if err == nil {
			err = errors.New("AP-REQ not valid")
		}
		return nil, ap, fail(op, "", err)
	}
	if err := a.checkBinding(ap.Authenticator); err != nil {
		return nil, ap, fail(op, ap.Authenticator.CName.PrincipalNameString(), err)
	}
	part := ap.Ticket.DecryptedEncPart
	start := part.StartTime
	if start.IsZero() {
		start = part.AuthTime
	}
	logon := creds.GetADCredentials()
	id := &Identity{User: creds.CName().PrincipalNameString(), Realm: creds.Domain(),
		Groups: logon.GroupMembershipSIDs, StartTime: start, EndTime: part.EndTime}
	if acct := a.pacAccount(ap); acct != nil {
		id.Account, id.SID = acct.Name, acct.SID
	} else if logon.EffectiveName != "" && logon.LogonDomainID != "" && logon.UserID > 0 {
		// A PAC without UPN_DNS_INFO's S flag (DCs before the November
		// 2021 updates): its logon information, as gokrb5 decoded it.
		id.Account, id.SID = logon.EffectiveName, logon.LogonDomainID+"-"+strconv.Itoa(logon.UserID)
	}
	return id, ap, nil
}

// pacAccount reads the account from the accepted ticket's PAC with our own
// reader (UPN_DNS_INFO; gokrb5's NDR decoder of the logon information
// mangles names outside the Basic Multilingual Plane); nil when the ticket
// has no PAC or it has no UPN_DNS_INFO with the account's name and SID.
func (a *Acceptor) pacAccount(ap messages.APReq) *Account {
	pac, ok := pacIn(ap.Ticket.DecryptedEncPart.AuthorizationData)
	if !ok {
		return nil
	}
	sname := ap.Ticket.SName
	if a.Principal != "" {
		sname, _ = types.ParseSPNString(a.Principal) // as gokrb5 reads it: "EXCHASA$" or "http/mail@REALM"
	}
	var acct *Account
	err := safely(func() error {
		key, _, err := a.Keytab.GetEncryptionKey(sname, ap.Ticket.Realm, ap.Ticket.EncPart.KVNO, ap.Ticket.EncPart.EType)
		if err != nil {
			return err
		}
		acct, err = accountFromPAC(pac, key)
		return err
	})
	if err != nil || acct.Name == "" || acct.SID == "" {
		return nil
	}
	return acct
}

func mutualRequested(ap messages.APReq) bool {
	return types.IsFlagSet(&ap.APOptions, flags.APOptionMutualRequired)
}

// mutualReply builds the AP-REP (part echoes the authenticator's time),
// sealed with the ticket's session key, inside an accepted SPNEGO response.
func mutualReply(ap messages.APReq, part messages.EncAPRepPart) (string, error) {
	pb, err := asn1.Marshal(part)
	if err != nil {
		return "", err
	}
	pb = asn1tools.AddASNAppTag(pb, asnAppTag.EncAPRepPart)
	ed, err := crypto.GetEncryptedData(pb, ap.Ticket.DecryptedEncPart.Key, keyusage.AP_REP_ENCPART, 0)
	if err != nil {
		return "", err
	}
	rb, err := asn1.Marshal(messages.APRep{PVNO: iana.PVNO, MsgType: msgtype.KRB_AP_REP, EncPart: ed})
	if err != nil {
		return "", err
	}
	rb = asn1tools.AddASNAppTag(rb, asnAppTag.APREP)
	mech := gssInitDER(tokAPRep, rb)
	resp := spnego.SPNEGOToken{Resp: true, NegTokenResp: spnego.NegTokenResp{
		NegState: asn1.Enumerated(spnego.NegStateAcceptCompleted), SupportedMech: gssapi.OIDKRB5.OID(), ResponseToken: mech}}
	b, err := resp.Marshal()
	if err != nil {
		return "", err
	}
	return "Negotiate " + base64.StdEncoding.EncodeToString(b), nil
}

// checkBinding applies TokenChecking to the authenticator: the Bnd of its
// GSS checksum (RFC 4121 4.1.1), zero when it has none, and whether its
// authorization data says the client binds (KERB_AP_OPTIONS_CBT).
func (a *Acceptor) checkBinding(auth types.Authenticator) error {
	if a.TokenChecking == TokenCheckingNone {
		return nil
	}
	bnd := make([]byte, 16)
	// The Bnd is there when the checksum says its length is 16 (RFC 4121
	// 4.1.1: Lgth), as MIT checks it.
	if auth.Cksum.CksumType == gssChecksumType && len(auth.Cksum.Checksum) >= 20 && binary.LittleEndian.Uint32(auth.Cksum.Checksum[0:4]) == 16 {
		bnd = auth.Cksum.Checksum[4:20]
	}
	return a.TokenChecking.checkBinding(bnd, claimsCBT(auth.AuthorizationData), a.ChannelBinding)
}

// claimsCBT reports whether authorization data holds
// AD-AUTH-DATA-AP-OPTIONS with KERB_AP_OPTIONS_CBT, inside AD-IF-RELEVANT
// (MS-KILE 3.2.5.8).
func claimsCBT(ads types.AuthorizationData) bool {
	for _, d := range ifRelevant(ads, adAuthDataAPOptions) {
		if len(d) == 4 && binary.LittleEndian.Uint32(d)&kerbAPOptionsCBT != 0 {
			return true
		}
	}
	return false
}
