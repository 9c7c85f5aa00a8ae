package kerberos

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jcmturner/gofork/encoding/asn1"
	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/credentials"
	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/iana/flags"
	"github.com/jcmturner/gokrb5/v8/iana/keyusage"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/iana/patype"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"
)

// Ticket is a service ticket with its session key and the facts from the
// KDC reply's encrypted part. Client is whom the ticket speaks for: for S4U
// tickets, the impersonated user.
type Ticket struct {
	Ticket      messages.Ticket
	SessionKey  types.EncryptionKey
	Client      types.PrincipalName
	ClientRealm string
	Server      types.PrincipalName
	ServerRealm string
	Flags       asn1.BitString
	AuthTime    time.Time
	StartTime   time.Time
	EndTime     time.Time
	RenewTill   time.Time
	// SID is the account that the PAC of this ticket's evidence named, read
	// by ImpersonateAccount (which compared it with the account asked for);
	// "" for a ticket made otherwise. The ticket's client name may be
	// another form of the account's name (an enterprise name after an
	// S4U2Self by UPN); the SID is what a ticket cache keyed by SID checks.
	SID string

	der   []byte       // Ticket in DER, kept from issue so headers need not re-marshal it
	state *ticketState // nil for a Ticket built by a caller
}

// ticketState is what a ticket keeps for the authenticators made with it.
type ticketState struct {
	clock uniqueClock
	keys  authKeys
}

// uniqueClock hands out authenticator timestamps that never repeat for one
// ticket. An acceptor's replay cache (RFC 4120 3.2.3; gokrb5's, IIS's)
// refuses a second authenticator with the same client, ctime and cusec, so
// two requests of one user in the same microsecond, which a busy gateway
// makes, would see the second refused as a replay. MIT's krb5 does the same
// (krb5_us_timeofday never returns a time twice).
type uniqueClock struct{ last atomic.Int64 }

// next returns now in microseconds, or one more than the last time given.
func (u *uniqueClock) next(now time.Time) (time.Time, int) {
	us := now.UnixMicro()
	for {
		last := u.last.Load()
		t := us
		if t <= last {
			t = last + 1
		}
		if u.last.CompareAndSwap(last, t) {
			return time.UnixMicro(t).UTC(), int(t % 1e6)
		}
	}
}

// authTime is the ctime and cusec for a new authenticator under t.
func (t *Ticket) authTime(now time.Time) (time.Time, int) {
	if t.state == nil {
		now = now.UTC()
		return now, now.Nanosecond() / 1000
	}
	return t.state.clock.next(now)
}

// ticketDER is the ticket's DER encoding.
func (t *Ticket) ticketDER() ([]byte, error) {
	if t.der != nil {
		return t.der, nil
	}
	return t.Ticket.Marshal()
}

// Forwardable reports the FORWARDABLE flag, which S4U2Proxy needs on the evidence.
func (t *Ticket) Forwardable() bool { return types.IsFlagSet(&t.Flags, flags.Forwardable) }

// ClientName is user@REALM.
func (t *Ticket) ClientName() string {
	return t.Client.PrincipalNameString() + "@" + t.ClientRealm
}

// ServerName is service/host@REALM.
func (t *Ticket) ServerName() string {
	return t.Server.PrincipalNameString() + "@" + t.ServerRealm
}

// String names the ticket without any secret.
func (t *Ticket) String() string {
	return fmt.Sprintf("%s for %s, until %s", t.ServerName(), t.ClientName(), t.EndTime.Format(time.RFC3339))
}

// Format prints String for every verb: a ticket holds its session key,
// which must never reach a log.
func (t Ticket) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprintf(f, "kerberos.Ticket{%q}", t.String())
		return
	}
	fmt.Fprint(f, t.String())
}

// String names the client without its credentials.
func (c *Client) String() string {
	return "kerberos.Client{" + c.cname.PrincipalNameString() + "@" + c.realm + "}"
}

func ticketFrom(rep messages.KDCRepFields) *Ticket {
	p := rep.DecryptedEncPart
	der, _ := rep.Ticket.Marshal() // nil on failure: ticketDER marshals again and reports it
	return &Ticket{der: der, state: &ticketState{},
		Ticket: rep.Ticket, SessionKey: p.Key,
		Client: rep.CName, ClientRealm: rep.CRealm,
		Server: p.SName, ServerRealm: p.SRealm,
		Flags: p.Flags, AuthTime: p.AuthTime, StartTime: p.StartTime, EndTime: p.EndTime, RenewTill: p.RenewTill,
	}
}

// Client is an account of the realm that asks the KDC for tickets: the
// gateway's service account asking on behalf of users (S4U), and any
// account's own service tickets (ServiceTicket), which is what an AD
// GSSAPI bind (ad.KerberosBind) and a WinRM logon (winrs.Kerberos) use, so
// one keytab makes one Client for all three. It holds a forwardable TGT
// and renews it before it expires. Methods are safe for concurrent use;
// set the fields before the first call.
type Client struct {
	// Transport carries requests to the KDCs (timeouts, dialer, in-flight
	// limit). Nil means a Transport on the krb5 configuration the client
	// was made with, with that type's defaults.
	Transport *Transport
	// RenewBefore is the least time before its end at which the TGT is
	// renewed; zero means 5 minutes, or for a TGT of less than 50 minutes
	// a tenth of its lifetime, but at least 2 minutes (Samba's KDC refuses
	// a TGT with less left) and at most half of it.
	//
	// The client renews the TGT much earlier: once 10-20% (at random) of
	// its lifetime has passed, in the background while the old one serves.
	// A ticket the KDC issues from a TGT ends no later than the TGT, so a
	// TGT renewed late hands out tickets with little life, which a Cache
	// must fetch again soon, and all at once, since they share the TGT's
	// end. Renewed early, every ticket gets 80-100% of a lifetime: fewer
	// exchanges per user, and tickets' ends spread over many TGTs. It costs
	// an AS exchange every 1-2 hours with AD's 10-hour TGTs. (Measured with
	// bench/gateway storm; BENCHMARKS.md.)
	RenewBefore time.Duration
	// AllowRC4 accepts tickets and session keys of RC4-HMAC or DES, and
	// asks the KDC for them. By default the client asks for AES only and
	// refuses anything weaker with ErrWeakEncryption: Windows DCs stop
	// issuing RC4 by default with the 2026 updates (CVE-2026-20833), and a
	// ticket in RC4 means an account on the path that the cut-off breaks.
	AllowRC4 bool

	cfg   *config.Config
	realm string
	cname types.PrincipalName
	creds *credentials.Credentials // password or keytab; nil for a ccache client
	now   func() time.Time         // the clock; tests replace it

	defaultTransport *Transport // when Transport is nil
	// send, when set, replaces the transport (tests).
	send func(ctx context.Context, realm string, req []byte) ([]byte, string, error)
	// noX509: the KDC refused PA-S4U-X509-USER once; send PA-FOR-USER alone.
	noX509 atomic.Bool

	// evidence holds the S4U2Self tickets Account just read an account
	// from, by the account's SID, for a moment: ImpersonateAccount's
	// S4U2Proxy takes one instead of asking for it again, so that a new
	// user costs the KDC two exchanges, not three.
	evidenceMu sync.Mutex
	evidence   map[string]heldEvidence

	mu        sync.Mutex
	key       types.EncryptionKey  // the long-term key of the last AS exchange
	keyPAData types.PADataSequence // its AS-REP padata (the KDC's salt)
	tgt       *Ticket
	renewAt   time.Time // when to log in again, ahead of tgt's end with jitter
	renewing  bool      // a login ahead of renewAt runs in the background
}

// asLogin is what an AS exchange gives: the TGT, and the reply key
// (the account's long-term key, which Account opens S4U2Self tickets with)
// with the KDC's padata for it.
type asLogin struct {
	tgt    *Ticket
	key    types.EncryptionKey
	padata types.PADataSequence
}

// deliver sends a request to a KDC of realm and names the KDC that answered.
func (c *Client) deliver(ctx context.Context, realm string, req []byte) ([]byte, string, error) {
	if c.send != nil {
		return c.send(ctx, realm, req)
	}
	if c.Transport != nil {
		return c.Transport.send(ctx, realm, req)
	}
	return c.defaultTransport.send(ctx, realm, req)
}

// renewBefore is the renewal margin for the TGT t: RenewBefore, or by
// default 5 minutes, for a short TGT (a krb5.conf ticket_lifetime of
// minutes) a tenth of its lifetime but not under 2 minutes, and never more
// than half of it. The floor is the KDC's: Samba 4.22 answers
// KRB_AP_ERR_TKT_EXPIRED to a TGS-REQ whose TGT has less than two minutes
// left (measured on the lab: refused at 1m59s, served at 2m19s).
func (c *Client) renewBefore(t *Ticket) time.Duration {
	if c.RenewBefore > 0 {
		return c.RenewBefore
	}
	m := max(defaultMargin(t), 2*time.Minute) // defaultMargin is at most 5 minutes
	if life := lifetime(t); life > 0 {
		m = min(m, life/2)
	}
	return m
}

// defaultMargin is 5 minutes, or a tenth of t's lifetime when that is less.
func defaultMargin(t *Ticket) time.Duration {
	if life := lifetime(t); life > 0 && life/10 < 5*time.Minute {
		return life / 10
	}
	return 5 * time.Minute
}

// lifetime is t's, from its start (or, when the KDC left the start out, its
// auth time) to its end; 0 when unknown.
func lifetime(t *Ticket) time.Duration {
	start := t.StartTime
	if start.IsZero() {
		start = t.AuthTime
	}
	if start.IsZero() || !t.EndTime.After(start) {
		return 0
	}
	return t.EndTime.Sub(start)
}

func newClient(user, realm string, cfg *config.Config) *Client {
	if realm == "" {
		realm = cfg.LibDefaults.DefaultRealm
	}
	return &Client{cfg: cfg, realm: realm, cname: types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, user),
		now: time.Now, defaultTransport: &Transport{Config: cfg}}
}

// NewWithPassword is a service account client that logs in with a password.
func NewWithPassword(user, realm, password string, cfg *config.Config) *Client {
	c := newClient(user, realm, cfg)
	c.creds = credentials.New(user, c.realm).WithPassword(password)
	return c
}

// NewWithKeytab is a service account client that logs in with a keytab.
func NewWithKeytab(user, realm string, kt *keytab.Keytab, cfg *config.Config) *Client {
	c := newClient(user, realm, cfg)
	c.creds = credentials.New(user, c.realm).WithKeytab(kt)
	return c
}

// ForAccount is a client for another account of the same realm, with a
// password, over the same KDCs and Transport: an administrator's client
// makes the gateway's service account client to check the delegation it
// set up.
func (c *Client) ForAccount(user, password string) *Client {
	o := NewWithPassword(user, c.realm, password, c.cfg)
	o.Transport, o.RenewBefore, o.AllowRC4 = c.Transport, c.RenewBefore, c.AllowRC4
	return o
}

// AtKDCs is a client of the same account and credentials whose requests
// go only to kdcs ("host" or "host:port") for its realm: the ASA roll
// asks the DC it wrote the password on (the PDC emulator) for its ticket,
// since another DC issues tickets under the old key until replication
// reaches it. Its Transport keeps c's timeouts and hooks. A ccache client
// carries its TGT over (any writable DC of the realm accepts it).
func (c *Client) AtKDCs(kdcs ...string) (*Client, error) {
	if len(kdcs) == 0 {
		return nil, fail("choose KDCs", c.realm, errors.New("no KDC given"))
	}
	addrs := make([]string, len(kdcs))
	for i, a := range kdcs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			a = net.JoinHostPort(a, "88")
		}
		addrs[i] = a
	}
	cfg := *c.cfg
	cfg.LibDefaults.DNSLookupKDC = false
	cfg.Realms = slices.Clone(c.cfg.Realms)
	found := false
	for i := range cfg.Realms {
		if strings.EqualFold(cfg.Realms[i].Realm, c.realm) {
			cfg.Realms[i].KDC, found = addrs, true
		}
	}
	if !found {
		cfg.Realms = append(cfg.Realms, config.Realm{Realm: c.realm, KDC: addrs})
	}
	o := newClient("", c.realm, &cfg)
	o.cname, o.creds, o.RenewBefore, o.AllowRC4 = c.cname, c.creds, c.RenewBefore, c.AllowRC4
	if c.Transport != nil {
		o.Transport = &Transport{Config: &cfg, Timeout: c.Transport.Timeout, Backoff: c.Transport.Backoff,
			Dialer: c.Transport.Dialer, MaxInFlight: c.Transport.MaxInFlight, Observe: c.Transport.Observe}
	}
	if c.creds == nil {
		c.mu.Lock()
		o.tgt = c.tgt
		c.mu.Unlock()
	}
	return o, nil
}

// NewFromCCache is a service account client whose TGT comes from an MIT
// credential cache (e.g. after kinit -f). It cannot log in again: when the
// TGT expires, calls fail until a new ccache is loaded.
func NewFromCCache(cc *credentials.CCache, cfg *config.Config) (*Client, error) {
	var c *Client
	err := safely(func() (err error) { c, err = newFromCCache(cc, cfg); return err })
	if err != nil {
		return nil, fail("load ccache", "", err)
	}
	return c, nil
}

func newFromCCache(cc *credentials.CCache, cfg *config.Config) (*Client, error) {
	if cc == nil || len(cc.DefaultPrincipal.PrincipalName.NameString) == 0 {
		return nil, errors.New("the ccache has no default principal")
	}
	c := newClient("", cc.GetClientRealm(), cfg)
	c.cname = cc.GetClientPrincipalName()
	tgs := types.NewPrincipalName(nametype.KRB_NT_SRV_INST, "krbtgt/"+c.realm)
	e, ok := cc.GetEntry(tgs)
	if !ok {
		return nil, fmt.Errorf("no TGT for %s in the ccache", c.realm)
	}
	var tkt messages.Ticket
	if err := tkt.Unmarshal(e.Ticket); err != nil {
		return nil, err
	}
	c.tgt = &Ticket{state: &ticketState{}, Ticket: tkt, SessionKey: e.Key, Client: e.Client.PrincipalName, ClientRealm: e.Client.Realm,
		Server: e.Server.PrincipalName, ServerRealm: e.Server.Realm, AuthTime: e.AuthTime,
		StartTime: e.StartTime, EndTime: e.EndTime, RenewTill: e.RenewTill,
		Flags: asn1.BitString{Bytes: flagBytes(e.TicketFlags), BitLength: 32}}
	return c, nil
}

// randFloat is a uniform float64 in [0, 1) from crypto/rand (no global state to seed).
func randFloat() float64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0.5
	}
	return float64(binary.BigEndian.Uint64(b[:])>>11) / (1 << 53)
}

func flagBytes(f asn1.BitString) []byte {
	b := make([]byte, 4)
	copy(b, f.Bytes)
	return b
}

// Realm is the service account's realm.
func (c *Client) Realm() string { return c.realm }

// Principal is the service account's name (without realm).
func (c *Client) Principal() types.PrincipalName { return c.cname }

// TGT returns the service account's forwardable TGT, logging in (AS
// exchange) when there is none or it ends within the renewal margin.
//
// Renewing ahead of the end does not make callers wait: once the renewal
// point has passed, the TGT in hand is returned and one login runs in the
// background (bounded by a minute). Only a caller that finds no usable TGT
// waits for the KDC, so a slow or unreachable KDC at renewal time delays
// nobody while the old TGT lasts.
func (c *Client) TGT(ctx context.Context) (*Ticket, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	valid := c.tgt != nil && now.Add(c.renewBefore(c.tgt)).Before(c.tgt.EndTime)
	if valid && (c.creds == nil || now.Before(c.renewAt)) {
		return c.tgt, nil
	}
	if c.creds == nil {
		if c.tgt == nil {
			return nil, fail("TGT", "", errors.New("no credentials"))
		}
		return nil, fail("TGT", "", fmt.Errorf("the ccache TGT expires at %s and there is no password or keytab to log in again", c.tgt.EndTime.Format(time.RFC3339)))
	}
	if valid {
		if !c.renewing {
			c.renewing = true
			go c.renewAhead(ctx)
		}
		return c.tgt, nil
	}
	l, err := c.login(ctx)
	if err != nil {
		return nil, err
	}
	c.storeLogin(l, now)
	return l.tgt, nil
}

// renewAhead logs in while the TGT in hand is still good. A failure (KDC
// down?) is tried again in half a minute, not on every call.
func (c *Client) renewAhead(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	l, err := c.login(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.renewing = false
	now := c.now()
	if err != nil {
		c.renewAt = now.Add(30 * time.Second)
		return
	}
	c.storeLogin(l, now)
}

// storeLogin keeps a login's TGT and reply key; c.mu is held.
func (c *Client) storeLogin(l *asLogin, now time.Time) {
	c.tgt, c.key, c.keyPAData = l.tgt, l.key, l.padata
	c.renewAt = renewPoint(l.tgt, now, c.renewBefore(l.tgt))
}

// renewPoint is when to renew a TGT: at a random point between 10% and
// 20% of its lifetime, and at least renewSkew before its end.
func renewPoint(t *Ticket, now time.Time, renewSkew time.Duration) time.Time {
	start := t.StartTime
	if start.IsZero() || start.After(now) {
		start = now
	}
	life := t.EndTime.Sub(start)
	at := start.Add(time.Duration(float64(life) * (0.1 + 0.1*randFloat())))
	if latest := t.EndTime.Add(-renewSkew); at.After(latest) {
		at = latest
	}
	return at
}

// dropTGT forgets the TGT a KDC rejected, unless another caller already
// replaced it.
func (c *Client) dropTGT(rejected *Ticket) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tgt == rejected && c.creds != nil {
		c.tgt = nil
	}
}

// login runs the AS exchange with PA-ENC-TIMESTAMP (AD requires
// pre-authentication) and asks for a forwardable TGT: without FORWARDABLE
// on the TGT, S4U2Self evidence is not forwardable either.
func (c *Client) login(ctx context.Context) (*asLogin, error) {
	const op = "AS exchange"
	target := c.cname.PrincipalNameString() + "@" + c.realm
	req, err := messages.NewASReqForTGT(c.realm, c.cfg, c.cname)
	if err != nil {
		return nil, fail(op, target, err)
	}
	req.ReqBody.EType = c.etypes(req.ReqBody.EType)
	types.SetFlag(&req.ReqBody.KDCOptions, flags.Forwardable)
	types.SetFlag(&req.ReqBody.KDCOptions, flags.Renewable)
	if req.ReqBody.RTime.IsZero() {
		req.ReqBody.RTime = c.now().Add(7 * 24 * time.Hour).UTC()
	}
	// gokrb5's key derivation, not its network code.
	keys := &client.Client{Credentials: c.creds, Config: c.cfg}
	var rep messages.ASRep
	var kdc string
	for attempt := 0; ; attempt++ {
		b, err := req.Marshal()
		if err != nil {
			return nil, fail(op, target, err)
		}
		raw, from, err := c.deliver(ctx, c.realm, b)
		if err != nil {
			return nil, fail(op, target, err)
		}
		kdc = from
		if kerr, ok := asKRBError(raw); ok {
			if kerr.ErrorCode == CodePreauthRequired && attempt == 0 {
				pa, err := encTimestamp(keys, &kerr, req.ReqBody.EType, c.now())
				if err != nil {
					return nil, failKDC(op, target, kdc, err)
				}
				req.PAData = append(req.PAData, pa)
				continue
			}
			return nil, kdcError(op, target, kdc, kerr, c.now())
		}
		if err := safely(func() error { return rep.Unmarshal(raw) }); err != nil {
			return nil, failKDC(op, target, kdc, fmt.Errorf("%w: %v", ErrBadReply, err))
		}
		break
	}
	var key types.EncryptionKey
	if err := safely(func() (err error) { key, err = rep.DecryptEncPart(c.creds); return err }); err != nil {
		return nil, failKDC(op, target, kdc, fmt.Errorf("%w: %v (wrong password or key?)", ErrBadReply, err))
	}
	var ok bool
	if err := safely(func() (err error) { ok, err = rep.Verify(c.cfg, c.creds, req); return err }); !ok || err != nil {
		return nil, failKDC(op, target, kdc, fmt.Errorf("%w: %v", ErrBadReply, err))
	}
	l := &asLogin{tgt: ticketFrom(rep.KDCRepFields), key: key, padata: rep.PAData}
	if err := c.strongEnough(key.KeyType, "the key of "+target); err != nil {
		return nil, failKDC(op, target, kdc, err)
	}
	if err := c.strongEnough(l.tgt.SessionKey.KeyType, "the TGT's session key"); err != nil {
		return nil, failKDC(op, target, kdc, err)
	}
	return l, nil
}

// KeyType is the encryption type of the service account's own key as the
// KDC last used it (its AS reply): AES (17, 18) for an account whose keys
// are AES, RC4-HMAC (23) for one whose keys predate AES or whose
// msDS-SupportedEncryptionTypes allows only RC4. It logs in when the client
// has no TGT yet; zero for a client made from a credential cache.
func (c *Client) KeyType(ctx context.Context) (int32, error) {
	if _, err := c.TGT(ctx); err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.key.KeyType, nil
}

// encTimestamp builds PA-ENC-TIMESTAMP with the first etype of ours (the
// AS request's, in our order of preference: AES only unless AllowRC4) that
// the KDC offered in its PREAUTH_REQUIRED error. The error is not
// authenticated: whoever answers for the KDC could offer RC4 alone, and a
// timestamp under the account's RC4 key (its NT hash) would be theirs to
// crack offline, so nothing outside ours is ever used.
func encTimestamp(keys *client.Client, kerr *messages.KRBError, ours []int32, now time.Time) (types.PAData, error) {
	if len(ours) == 0 {
		return types.PAData{}, errors.New("no supported encryption type in default_tkt_enctypes (gokrb5 knows aes128/256-cts-hmac-sha1-96, aes128-cts-hmac-sha256-128, aes256-cts-hmac-sha384-192, rc4-hmac, des3-cbc-sha1-kd)")
	}
	var offered types.PADataSequence
	if err := safely(func() error { return offered.Unmarshal(kerr.EData) }); err != nil {
		return types.PAData{}, fmt.Errorf("PREAUTH_REQUIRED e-data: %w", err)
	}
	var info types.ETypeInfo2
	hasInfo := false
	for _, pa := range offered {
		if pa.PADataType != patype.PA_ETYPE_INFO2 {
			continue
		}
		if err := safely(func() error { return info.Unmarshal(pa.PADataValue) }); err != nil {
			return types.PAData{}, fmt.Errorf("ETYPE-INFO2: %w", err)
		}
		hasInfo = true
		break
	}
	etypeID := ours[0] // no ETYPE-INFO2 (an older KDC): our first
	if hasInfo {
		entry, ok := firstOffered(ours, info)
		if !ok {
			var named []string
			for _, e := range info {
				named = append(named, ETypeName(e.EType))
			}
			return types.PAData{}, fmt.Errorf("%w: the KDC offers pre-authentication only in %s", ErrWeakEncryption, strings.Join(named, ", "))
		}
		etypeID = entry.EType
		// The key is derived with this entry's salt alone: given the
		// KDC's list, gokrb5 would take its first entry's etype.
		one, err := asn1.Marshal(types.ETypeInfo2{entry})
		if err != nil {
			return types.PAData{}, err
		}
		seq, err := asn1.Marshal(types.PADataSequence{{PADataType: patype.PA_ETYPE_INFO2, PADataValue: one}})
		if err != nil {
			return types.PAData{}, err
		}
		narrowed := *kerr
		narrowed.EData = seq
		kerr = &narrowed
	}
	et, err := crypto.GetEtype(etypeID)
	if err != nil {
		return types.PAData{}, err
	}
	var key types.EncryptionKey
	var kvno int
	if err := safely(func() (err error) { key, kvno, err = keys.Key(et, 0, kerr); return err }); err != nil {
		return types.PAData{}, err
	}
	ts, err := asn1.Marshal(types.PAEncTSEnc{PATimestamp: now.UTC().Truncate(time.Second),
		PAUSec: int((now.UnixNano() / 1000) % 1000000)})
	if err != nil {
		return types.PAData{}, err
	}
	ed, err := crypto.GetEncryptedData(ts, key, keyusage.AS_REQ_PA_ENC_TIMESTAMP, kvno)
	if err != nil {
		return types.PAData{}, err
	}
	b, err := asn1.Marshal(ed)
	if err != nil {
		return types.PAData{}, err
	}
	return types.PAData{PADataType: patype.PA_ENC_TIMESTAMP, PADataValue: b}, nil
}

// firstOffered is the ETYPE-INFO2 entry of the first of ours, in our order
// of preference, that the KDC offered.
func firstOffered(ours []int32, info types.ETypeInfo2) (types.ETypeInfo2Entry, bool) {
	for _, want := range ours {
		for _, e := range info {
			if e.EType == want {
				return e, true
			}
		}
	}
	return types.ETypeInfo2Entry{}, false
}

// LoadConfig reads a krb5.conf.
func LoadConfig(path string) (*config.Config, error) {
	var cfg *config.Config
	err := safely(func() (err error) { cfg, err = config.Load(path); return err })
	if err != nil {
		return nil, fail("load krb5.conf", path, err)
	}
	return cfg, nil
}

// NewConfig is a krb5 configuration for one realm and its KDCs
// ("host" or "host:port"), with DNS lookups off.
func NewConfig(realm string, kdcs ...string) (*config.Config, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "[libdefaults]\n default_realm = %s\n dns_lookup_kdc = false\n dns_lookup_realm = false\n", realm)
	b.WriteString(" forwardable = true\n noaddresses = true\n udp_preference_limit = 1465\n")
	fmt.Fprintf(&b, "[realms]\n %s = {\n", realm)
	for _, k := range kdcs {
		fmt.Fprintf(&b, "  kdc = %s\n", k)
	}
	b.WriteString(" }\n")
	var cfg *config.Config
	err := safely(func() (err error) { cfg, err = config.NewFromString(b.String()); return err })
	if err != nil {
		return nil, fail("build krb5 config", realm, err)
	}
	return cfg, nil
}
