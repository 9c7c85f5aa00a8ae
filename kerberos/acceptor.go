package kerberos

import (
	"encoding/base64"
	"errors"
	"fmt"
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
}

// Identity is who a Negotiate header authenticated.
type Identity struct {
	User   string // the client principal, e.g. alice
	Realm  string
	Groups []string // group SIDs from the PAC, when the ticket carries one
	// ReplyHeader, when the client asked for mutual authentication, is the
	// WWW-Authenticate value to send back: "Negotiate <AP-REP>".
	ReplyHeader string
}

// Accept validates an Authorization header value.
func (a *Acceptor) Accept(authorization string) (*Identity, error) {
	const op = "accept"
	b64, ok := cutNegotiate(authorization)
	if !ok {
		return nil, fail(op, "", errors.New("not a Negotiate header with a token"))
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fail(op, "", err)
	}
	var tok spnego.SPNEGOToken
	if err := tok.Unmarshal(raw); err != nil || !tok.Init {
		return nil, fail(op, "", fmt.Errorf("not an SPNEGO NegTokenInit: %v", err))
	}
	body, err := gssUnwrap(tokAPReq, tok.NegTokenInit.MechTokenBytes)
	if err != nil {
		return nil, fail(op, "", err)
	}
	var ap messages.APReq
	if err := ap.Unmarshal(body); err != nil {
		return nil, fail(op, "", err)
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
			return nil, kdcError(op, "", kerr)
		}
		if err == nil {
			err = errors.New("AP-REQ not valid")
		}
		return nil, fail(op, "", err)
	}
	id := &Identity{User: creds.CName().PrincipalNameString(), Realm: creds.Domain(),
		Groups: creds.GetADCredentials().GroupMembershipSIDs}
	if mutualRequested(ap) {
		h, err := mutualReply(ap)
		if err != nil {
			return nil, fail(op, id.User, err)
		}
		id.ReplyHeader = h
	}
	return id, nil
}

func mutualRequested(ap messages.APReq) bool {
	return types.IsFlagSet(&ap.APOptions, flags.APOptionMutualRequired)
}

// mutualReply builds the AP-REP echoing the authenticator's time, sealed
// with the ticket's session key, inside an accepted SPNEGO response.
func mutualReply(ap messages.APReq) (string, error) {
	part := messages.EncAPRepPart{CTime: ap.Authenticator.CTime, Cusec: ap.Authenticator.Cusec}
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
