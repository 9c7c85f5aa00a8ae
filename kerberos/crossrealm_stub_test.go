package kerberos

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gofork/encoding/asn1"
	"github.com/jcmturner/gokrb5/v8/crypto"
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

// xrealmKDC stands for the KDCs of two realms that trust each other, for
// the part of cross-realm S4U that Samba 4.22 does not do (its KDC refuses
// the third exchange; TestCrossRealmS4U shows where). It answers the first
// two exchanges as the lab's Samba KDCs did (a TGT krbtgt/OTHER@CORP; a
// referral krbtgt/CORP@OTHER to the S4U2Self at OTHER for the service's
// enterprise name), and the third and the S4U2Proxy as MS-SFU 3.2.5.1.2 and
// 3.2.5.2 say a Windows KDC does: evidence for bob@OTHER, forwardable,
// then a ticket for him to the SPN. Every request is decrypted and checked
// as a KDC would: the TGT with the right key, the PA-FOR-USER checksum
// with the session key of the ticket it came with.
type xrealmKDC struct {
	t     *testing.T
	kt    *keytab.Keytab
	exchs []string // realm and server of each request, in order
}

const (
	xCorp  = "CORP.EXAMPLE.TEST"
	xOther = "OTHER.EXAMPLE.TEST"
)

func xName(parts ...string) types.PrincipalName {
	return types.PrincipalName{NameType: nametype.KRB_NT_SRV_INST, NameString: parts}
}

func newXrealmKDC(t *testing.T) *xrealmKDC {
	kt := keytab.New()
	for i, p := range []struct{ name, realm string }{
		{"krbtgt/" + xCorp, xCorp}, {"krbtgt/" + xOther, xCorp}, {"krbtgt/" + xCorp, xOther},
		{"svc_x", xCorp}, {"http/mail.corp.example.test", xCorp},
	} {
		key := make([]byte, 32)
		for j := range key {
			key[j] = byte(i*16 + j)
		}
		if err := kt.AddEntry(p.name, p.realm, fmt.Sprintf("%x", key), time.Now(), 1, etypeID.AES256_CTS_HMAC_SHA1_96); err != nil {
			t.Fatal(err)
		}
	}
	return &xrealmKDC{t: t, kt: kt}
}

// ticket issues a ticket to sname@srealm for cname@crealm.
func (k *xrealmKDC) ticket(cname types.PrincipalName, crealm string, sname types.PrincipalName, srealm string, forwardable bool) (messages.Ticket, types.EncryptionKey) {
	fl := types.NewKrbFlags()
	if forwardable {
		types.SetFlag(&fl, flags.Forwardable)
	}
	now := time.Now().UTC().Truncate(time.Second)
	tkt, key, err := messages.NewTicket(cname, crealm, sname, srealm, fl, k.kt, etypeID.AES256_CTS_HMAC_SHA1_96, 1, now, now, now.Add(10*time.Hour), now.Add(24*time.Hour))
	if err != nil {
		k.t.Fatal(err)
	}
	tkt.SName = sname
	return tkt, key
}

// send is the Client's transport: one TGS exchange with realm's KDC.
func (k *xrealmKDC) send(_ context.Context, realm string, b []byte) ([]byte, string, error) {
	var req messages.TGSReq
	if err := req.Unmarshal(b); err != nil {
		return nil, "", err
	}
	var ap messages.APReq
	var pfu *paForUser
	for _, pa := range req.PAData {
		switch pa.PADataType {
		case patype.PA_TGS_REQ:
			if err := ap.Unmarshal(pa.PADataValue); err != nil {
				return nil, "", err
			}
		case patype.PA_FOR_USER:
			pfu = new(paForUser)
			if _, err := asn1.Unmarshal(pa.PADataValue, pfu); err != nil {
				return nil, "", err
			}
		}
	}
	// The TGT presented must be for this KDC's realm's krbtgt, or a
	// cross-realm TGT into it, and decrypt with its key.
	if ap.Ticket.Realm != realm && !(strings.HasPrefix(ap.Ticket.SName.PrincipalNameString(), "krbtgt/") && ap.Ticket.SName.NameString[1] == realm) {
		return nil, "", fmt.Errorf("stub: %s got a ticket of %s", realm, ap.Ticket.Realm)
	}
	if err := ap.Ticket.DecryptEncPart(k.kt, &ap.Ticket.SName); err != nil {
		return nil, "", fmt.Errorf("stub: ticket %s: %w", ap.Ticket.SName.PrincipalNameString(), err)
	}
	sess := ap.Ticket.DecryptedEncPart.Key
	if pfu != nil {
		want, err := newPAForUser(pfu.UserName, pfu.UserRealm, sess)
		if err != nil || string(want.Cksum.Checksum) != string(pfu.Cksum.Checksum) {
			return nil, "", errors.New("stub: PA-FOR-USER checksum does not verify with the ticket's session key")
		}
	}
	body := req.ReqBody
	k.exchs = append(k.exchs, realm+" "+body.SName.PrincipalNameString())
	client := ap.Ticket.DecryptedEncPart
	var tkt messages.Ticket
	var key types.EncryptionKey
	cname, crealm := client.CName, client.CRealm
	switch {
	case realm == xCorp && body.SName.PrincipalNameString() == "krbtgt/"+xOther:
		tkt, key = k.ticket(cname, crealm, xName("krbtgt", xOther), xCorp, true)
	case realm == xOther && body.SName.NameType == nametype.KRB_NT_ENTERPRISE && pfu != nil:
		// The referral back to CORP; the user's identity rides in the PAC in
		// AD, here in the stub's own record.
		if pfu.UserName.PrincipalNameString() != "bob" || pfu.UserRealm != xOther {
			return nil, "", fmt.Errorf("stub: S4U2Self at OTHER for %s@%s", pfu.UserName.PrincipalNameString(), pfu.UserRealm)
		}
		tkt, key = k.ticket(cname, crealm, xName("krbtgt", xCorp), xOther, true)
	case realm == xCorp && body.SName.PrincipalNameString() == "svc_x" && pfu != nil:
		if ap.Ticket.Realm != xOther {
			return nil, "", errors.New("stub: CORP's S4U2Self for a user of OTHER without OTHER's referral")
		}
		tkt, key = k.ticket(pfu.UserName, pfu.UserRealm, types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: []string{"svc_x"}}, xCorp, true)
		cname, crealm = pfu.UserName, pfu.UserRealm
	case realm == xCorp && len(body.AdditionalTickets) == 1:
		ev := body.AdditionalTickets[0]
		if err := ev.DecryptEncPart(k.kt, &ev.SName); err != nil {
			return nil, "", fmt.Errorf("stub: evidence: %w", err)
		}
		if !types.IsFlagSet(&ev.DecryptedEncPart.Flags, flags.Forwardable) {
			return nil, "", errors.New("stub: evidence not forwardable")
		}
		cname, crealm = ev.DecryptedEncPart.CName, ev.DecryptedEncPart.CRealm
		tkt, key = k.ticket(cname, crealm, body.SName, xCorp, true)
	default:
		return nil, "", fmt.Errorf("stub: no answer for %s at %s", body.SName.PrincipalNameString(), realm)
	}
	now := time.Now().UTC().Truncate(time.Second)
	part := messages.EncKDCRepPart{Key: key, Nonce: body.Nonce, Flags: tkt.DecryptedEncPart.Flags, AuthTime: now, StartTime: now,
		EndTime: now.Add(10 * time.Hour), RenewTill: now.Add(24 * time.Hour), SRealm: tkt.Realm, SName: tkt.SName,
		LastReqs: []messages.LastReq{{LRType: 0, LRValue: now}}}
	if err := tkt.DecryptEncPart(k.kt, &tkt.SName); err == nil {
		part.Flags = tkt.DecryptedEncPart.Flags
	}
	pb, err := part.Marshal()
	if err != nil {
		return nil, "", err
	}
	ed, err := crypto.GetEncryptedData(pb, sess, keyusage.TGS_REP_ENCPART_SESSION_KEY, 0)
	if err != nil {
		return nil, "", err
	}
	tkt.DecryptedEncPart = messages.EncTicketPart{}
	rep := messages.TGSRep{KDCRepFields: messages.KDCRepFields{PVNO: 5, MsgType: msgtype.KRB_TGS_REP,
		CRealm: crealm, CName: cname, Ticket: tkt, EncPart: ed}}
	out, err := rep.Marshal()
	return out, "stub-" + realm, err
}

// The success path of cross-realm S4U, against the stub: three exchanges
// for the evidence (ours, OTHER's, ours again with OTHER's referral), each
// with the right realm and ticket, then S4U2Proxy; the tickets speak for
// bob@OTHER.
func TestCrossRealmS4UAgainstStub(t *testing.T) {
	k := newXrealmKDC(t)
	cfg, err := ParseConfig("[libdefaults]\n default_realm = " + xCorp + "\n[realms]\n " + xCorp + " = {\n  kdc = 127.0.0.1:1\n }\n " + xOther + " = {\n  kdc = 127.0.0.1:2\n }\n")
	if err != nil {
		t.Fatal(err)
	}
	c := NewWithPassword("svc_x", xCorp, "unused", cfg)
	c.send = k.send
	svc := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: []string{"svc_x"}}
	tkt, key := k.ticket(svc, xCorp, xName("krbtgt", xCorp), xCorp, true)
	c.tgt = &Ticket{state: &ticketState{}, Ticket: tkt, SessionKey: key, Client: svc, ClientRealm: xCorp,
		Server: xName("krbtgt", xCorp), ServerRealm: xCorp, EndTime: time.Now().Add(10 * time.Hour)}
	c.renewAt = time.Now().Add(time.Hour)

	ctx := context.Background()
	ev, err := c.S4U2Self(ctx, "bob@"+xOther)
	if err != nil {
		t.Fatal(err)
	}
	if !ev.IsFor("bob@"+xOther) || !ev.Forwardable() || ev.ClientRealm != xOther {
		t.Fatalf("evidence %v", ev)
	}
	want := []string{xCorp + " krbtgt/" + xOther, xOther + " svc_x@" + xCorp, xCorp + " svc_x"}
	if fmt.Sprint(k.exchs) != fmt.Sprint(want) {
		t.Fatalf("exchanges %q, want %q", k.exchs, want)
	}
	tk, err := c.S4U2Proxy(ctx, ev, "http/mail.corp.example.test")
	if err != nil {
		t.Fatal(err)
	}
	if tk.ClientName() != "bob@"+xOther {
		t.Fatalf("proxy ticket for %s", tk.ClientName())
	}
	// A Cache keys on the name as given, user@OTHER included.
	cache := &Cache{Source: c}
	if got, err := cache.Ticket(ctx, "bob@"+xOther, "http/mail.corp.example.test"); err != nil || got.ClientName() != "bob@"+xOther {
		t.Fatalf("cache: %v %v", got, err)
	}
	// A user of a realm the configuration does not know stays an enterprise
	// name for our KDC (the stub has no answer for it).
	if _, err := c.S4U2Self(ctx, "carol@ELSEWHERE.TEST"); err == nil {
		t.Fatal("a user of an unknown realm was impersonated")
	}
}
