package kerberos

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/iana/adtype"
	"github.com/jcmturner/gokrb5/v8/iana/keyusage"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"
)

// Account is the Active Directory account that a name belongs to, as the KDC
// resolved it. Client.Account reads it from the PAC of an S4U2Self ticket,
// which the KDC encrypts to the service account and signs, so it is the
// directory's own answer, not a guess from the name's shape: a UPN's prefix is
// not an account name in AD ("j.doe@corp.example.com" may be jdoe, and
// "alice@example.com" may be xsmith while another account is called alice).
type Account struct {
	// User is the name S4U2Self takes for the account: Name in the service
	// account's realm, Name@Realm for an account of another realm.
	User string
	// Name is the sAMAccountName, spelled as AD keeps it (the PAC's
	// UPN_DNS_INFO, or its logon information from older DCs): "ALICE" and
	// "alice" both give "alice".
	Name string
	// Realm is the account's Kerberos realm.
	Realm string
	// UPN is the account's user principal name (UPN_DNS_INFO), explicit or
	// implicit (sAMAccountName@dnsdomain); "" when the PAC carries none.
	UPN string
	// ImplicitUPN says UPN is the implicit one: the account has no
	// userPrincipalName (UPN_DNS_INFO's U flag), and another account may
	// hold the same name as its explicit UPN, which AD looks up first.
	ImplicitUPN bool
	// SID is the account's security identifier, "S-1-5-21-...-1104".
	SID string
}

// ErrNoServiceKey is matched by Account's error when the client has no
// long-term key of the service account (a client made from a ccache): it
// cannot open the S4U2Self ticket to read the PAC.
var ErrNoServiceKey = errors.New("the service account's key is needed to read the PAC (give a password or keytab, not a ccache)")

// ErrNoPAC is matched by Account's error when the KDC's ticket carries no
// PAC, or one that does not verify with the service account's key.
var ErrNoPAC = errors.New("the S4U2Self ticket carries no valid PAC")

// Account resolves name to the account that holds it, as the KDC does:
// S4U2Self for name (a bare account name, name@REALM, or a UPN, which goes as
// an enterprise name that the KDC looks up in userPrincipalName and then as an
// implicit UPN), then the evidence ticket's PAC, opened with the service
// account's own key and checked against the PAC's server signature. Every
// form of one account's name gives the same Account, spelled as AD keeps it.
//
// A name the KDC does not know fails with ErrClientUnknown, a disabled
// account with ErrPolicy. A user marked sensitive resolves (the evidence is
// simply not forwardable).
func (c *Client) Account(ctx context.Context, name string) (*Account, error) {
	const op = "resolve account"
	ev, err := c.S4U2Self(ctx, name)
	if err != nil {
		return nil, err
	}
	key, err := c.serviceKey(ev.Ticket.EncPart.EType, ev.Ticket.EncPart.KVNO)
	if err != nil {
		return nil, fail(op, name, err)
	}
	var a *Account
	if err := safely(func() (err error) { a, err = accountFromTicket(ev.Ticket, key); return err }); err != nil {
		return nil, fail(op, name, err)
	}
	a.Realm = ev.ClientRealm
	a.User = a.Name
	if !EqualNames(a.Realm, c.realm) {
		a.User = a.Name + "@" + a.Realm
	}
	c.keepEvidence(a, ev)
	return a, nil
}

// evidenceMaxAge is how long a resolution's S4U2Self ticket may stand in
// for ImpersonateAccount's own: the name-to-SID check that the S4U2Self
// would repeat is then this old at most. evidenceMax bounds how many are
// held (names resolved and never impersonated, such as refused logins').
const (
	evidenceMaxAge = 30 * time.Second
	evidenceMax    = 4096
)

// heldEvidence is an S4U2Self ticket whose PAC named an account.
type heldEvidence struct {
	ticket *Ticket
	user   string // Account.User of the account it named
	at     time.Time
}

// keepEvidence holds ev, whose PAC named a, for ImpersonateAccount, when
// the KDC named its client by the account's name, or by the account's UPN
// as AD spells it with the account's name before the @ (Samba keeps a UPN
// asked for as an enterprise name). The service ticket made from it names
// the client the same way: a backend that reads the client name, not the
// PAC, must never see a form of the name the asker chose (another case,
// another account's name before an alternative suffix). Only an account of
// the service's own realm: another realm's goes through referrals.
func (c *Client) keepEvidence(a *Account, ev *Ticket) {
	if a.SID == "" || !ev.Forwardable() {
		return // S4U2Proxy would refuse it
	}
	cn := ev.Client
	if a.User != a.Name || len(cn.NameString) != 1 || !EqualNames(ev.ClientRealm, c.realm) {
		return
	}
	switch name := cn.NameString[0]; cn.NameType {
	case nametype.KRB_NT_PRINCIPAL:
		if name != a.Name {
			return
		}
	case nametype.KRB_NT_ENTERPRISE:
		if prefix, _, _ := strings.Cut(name, "@"); name != a.UPN || prefix != a.Name {
			return
		}
	default:
		return
	}
	now := c.now()
	c.evidenceMu.Lock()
	defer c.evidenceMu.Unlock()
	if c.evidence == nil {
		c.evidence = map[string]heldEvidence{}
	}
	if len(c.evidence) >= evidenceMax {
		for sid, e := range c.evidence {
			if now.Sub(e.at) >= evidenceMaxAge {
				delete(c.evidence, sid)
			}
		}
		if len(c.evidence) >= evidenceMax {
			return
		}
	}
	c.evidence[a.SID] = heldEvidence{ticket: ev, user: a.User, at: now}
}

// takeEvidence returns, once, the S4U2Self ticket that Account read acct
// from within evidenceMaxAge, kept under the SID its PAC named and for the
// same name; nil when there is none.
func (c *Client) takeEvidence(acct *Account) *Ticket {
	c.evidenceMu.Lock()
	e, ok := c.evidence[acct.SID]
	delete(c.evidence, acct.SID)
	c.evidenceMu.Unlock()
	now := c.now()
	if !ok || e.user != acct.User || now.Sub(e.at) >= evidenceMaxAge || !now.Before(e.ticket.EndTime) {
		return nil
	}
	return e.ticket
}

// AccountIn reads the account of a ticket issued to c's own account (a
// ticket some user got to c's principal with their own TGT): the PAC, opened
// with c's long-term key and checked against the PAC's server signature. A
// password proved in an AS exchange, then such a ticket, names the account
// the password belongs to in one chain of the KDC's own answers: the PAC is
// the TGT's, made by the KDC that took the password.
func (c *Client) AccountIn(t *Ticket) (*Account, error) {
	const op = "read a ticket's account"
	if t == nil {
		return nil, fail(op, "", errors.New("no ticket"))
	}
	key, err := c.serviceKey(t.Ticket.EncPart.EType, t.Ticket.EncPart.KVNO)
	if err != nil {
		return nil, fail(op, t.ClientName(), err)
	}
	var a *Account
	if err := safely(func() (err error) { a, err = accountFromTicket(t.Ticket, key); return err }); err != nil {
		return nil, fail(op, t.ClientName(), err)
	}
	a.Realm = t.ClientRealm
	a.User = a.Name
	if !EqualNames(a.Realm, c.realm) {
		a.User = a.Name + "@" + a.Realm
	}
	return a, nil
}

// ImpersonateAccount does S4U2Self for acct.User, checks that the evidence
// ticket's PAC names acct.SID, then S4U2Proxy to spn. A name that AD has
// given to another account since it was resolved (a rename, a UPN moved)
// fails with ErrAccountChanged instead of yielding the other account's
// ticket. It needs the service account's key to open the PAC
// (ErrNoServiceKey without one). The first impersonation of an account that
// Account resolved within the last 30 seconds takes the S4U2Self ticket
// Account got, whose PAC named the same SID, and asks the KDC for S4U2Proxy
// only: a new user costs two exchanges, not three. That holds when Account
// was given the account's name, or its UPN as AD spells it with the
// account's name before the @ (Samba keeps a UPN as the ticket's
// enterprise client name, and the service ticket names the client so);
// another form of the name costs three, so that no ticket names its client
// in a form the asker chose. The ticket's SID field is the SID the
// evidence's PAC named.
func (c *Client) ImpersonateAccount(ctx context.Context, acct *Account, spn string) (*Ticket, error) {
	const op = "S4U2Self"
	if acct == nil || acct.User == "" || acct.SID == "" {
		return nil, fail(op, "", errors.New("an account without a name or a SID"))
	}
	if ev := c.takeEvidence(acct); ev != nil {
		// Account resolved this account a moment ago: its S4U2Self
		// ticket's PAC named acct.SID (the key it was kept under), and
		// serves as the evidence. If the KDC refuses it (the name moved to
		// another account since, which Samba answers with TGT_REVOKED),
		// the fresh path below says so as ErrAccountChanged; the service's
		// own TGT is not at fault.
		t, err := c.proxyOnce(ctx, ev, spn)
		if err == nil {
			t.SID = acct.SID
			return t, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
	}
	ev, err := c.S4U2Self(ctx, acct.User)
	if err != nil {
		return nil, err
	}
	key, err := c.serviceKey(ev.Ticket.EncPart.EType, ev.Ticket.EncPart.KVNO)
	if err != nil {
		return nil, fail(op, acct.User, err)
	}
	var got *Account
	if err := safely(func() (err error) { got, err = accountFromTicket(ev.Ticket, key); return err }); err != nil {
		return nil, fail(op, acct.User, err)
	}
	if got.SID != acct.SID {
		return nil, fail(op, acct.User, fmt.Errorf("%w: the PAC names %s, the account resolved was %s", ErrAccountChanged, got.SID, acct.SID))
	}
	t, err := c.S4U2Proxy(ctx, ev, spn)
	if err != nil {
		return nil, err
	}
	t.SID = got.SID
	return t, nil
}

// proxyOnce is S4U2Proxy with the current TGT and no second try: a refusal
// is the evidence's, not the TGT's, on the path that calls it.
func (c *Client) proxyOnce(ctx context.Context, ev *Ticket, spn string) (*Ticket, error) {
	sname, err := parseSPN(spn)
	if err != nil {
		return nil, fail("S4U2Proxy", spn, err)
	}
	tgt, err := c.TGT(ctx)
	if err != nil {
		return nil, err
	}
	return c.s4u2Proxy(ctx, tgt, ev, spn, sname)
}

// accountFromTicket opens a ticket encrypted to the service account and reads
// its PAC. It may panic on malformed input (gokrb5's NDR decoder): callers
// wrap it in safely.
func accountFromTicket(t messages.Ticket, key types.EncryptionKey) (*Account, error) {
	b, err := crypto.DecryptEncPart(t.EncPart, key, keyusage.KDC_REP_TICKET)
	if err != nil {
		return nil, fmt.Errorf("%w: opening the ticket: %v", ErrNoPAC, err)
	}
	var enc messages.EncTicketPart
	if err := enc.Unmarshal(b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoPAC, err)
	}
	pac, ok := pacIn(enc.AuthorizationData)
	if !ok {
		return nil, ErrNoPAC
	}
	return accountFromPAC(pac, key)
}

// pacIn finds the PAC (AD-WIN2K-PAC inside AD-IF-RELEVANT) in a ticket's
// authorization data.
func pacIn(ads types.AuthorizationData) ([]byte, bool) {
	if found := ifRelevant(ads, adtype.ADWin2KPAC); len(found) > 0 {
		return found[0], true
	}
	return nil, false
}

// ifRelevant is the data of every element of type adType inside the
// AD-IF-RELEVANT elements of ads (RFC 4120 5.2.6.1), in order.
func ifRelevant(ads types.AuthorizationData, adType int32) [][]byte {
	var out [][]byte
	for _, ad := range ads {
		if ad.ADType != adtype.ADIfRelevant {
			continue
		}
		var inner types.AuthorizationData
		if err := inner.Unmarshal(ad.ADData); err != nil {
			continue
		}
		for _, e := range inner {
			if e.ADType == adType {
				out = append(out, e.ADData)
			}
		}
	}
	return out
}

// validName: non-empty UTF-8 without control characters, short enough for AD.
func validName(s string) bool {
	if s == "" || len(s) > 1024 || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// serviceKey is the service account's long-term key of etype: from the
// keytab, or the key the last AS exchange derived from the password (with
// the KDC's salt), or derived again for another etype.
func (c *Client) serviceKey(etype int32, kvno int) (types.EncryptionKey, error) {
	if c.creds == nil {
		return types.EncryptionKey{}, ErrNoServiceKey
	}
	if c.creds.HasKeytab() {
		var key types.EncryptionKey
		err := safely(func() (err error) {
			key, _, err = c.creds.Keytab().GetEncryptionKey(c.cname, c.realm, kvno, etype)
			return err
		})
		return key, err
	}
	c.mu.Lock()
	key, padata := c.key, c.keyPAData
	c.mu.Unlock()
	if key.KeyType == etype && len(key.KeyValue) > 0 {
		return key, nil
	}
	if !c.creds.HasPassword() {
		return types.EncryptionKey{}, ErrNoServiceKey
	}
	err := safely(func() (err error) {
		key, _, err = crypto.GetKeyFromPassword(c.creds.Password(), c.cname, c.realm, etype, padata)
		return err
	})
	return key, err
}
