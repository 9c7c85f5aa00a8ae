package kerberos_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
	"github.com/segkcd/segkcd/kerberos"
)

func TestImpersonate(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := e.client()

	tgt, err := c.TGT(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !tgt.Forwardable() {
		t.Fatal("service TGT not forwardable")
	}
	ev, err := c.S4U2Self(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !ev.Forwardable() || !strings.EqualFold(ev.ClientName(), "alice@"+e.lab.Realm) ||
		!strings.EqualFold(ev.Server.PrincipalNameString(), svcName) {
		t.Fatalf("evidence: %v forwardable=%v", ev, ev.Forwardable())
	}
	tk, err := c.S4U2Proxy(ctx, ev, e.mailSPN)
	if err != nil {
		t.Fatal(err)
	}
	if tk.ClientName() != ev.ClientName() || !strings.EqualFold(tk.ServerName(), e.mailSPN+"@"+e.lab.Realm) {
		t.Fatalf("proxy ticket: %v", tk)
	}
	// The user by user@REALM, and by UPN (an enterprise name, which Samba
	// 4.17 keeps in enterprise form in the ticket's client name).
	for u, want := range map[string]string{"bob@" + e.lab.Realm: "bob", "bob@" + e.lab.DNSDomain: "bob@" + e.lab.DNSDomain} {
		tk, err := c.Impersonate(ctx, u, e.mailSPN)
		if err != nil || !strings.EqualFold(tk.Client.PrincipalNameString(), want) {
			t.Fatalf("Impersonate(%s): %v %v", u, tk, err)
		}
	}
}

// The outcome table of DESIGN.md section 3, each row asserting the typed error.
func TestOutcomes(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := e.client()
	for _, tc := range []struct {
		name, user, spn string
		want            error
		code            int32 // 0: not a KDC error
	}{
		{"SPN not in msDS-AllowedToDelegateTo", "alice", e.otherSPN, kerberos.ErrNotDelegable, kerberos.CodeBadOption},
		// Samba 4.22, like 4.17, refuses non-forwardable evidence with 13.
		{"sensitive user (NOT_DELEGATED)", "carol", e.mailSPN, kerberos.ErrEvidenceNotForwardable, kerberos.CodeBadOption},
		{"unknown user", "nosuchuser", e.mailSPN, kerberos.ErrClientUnknown, kerberos.CodeCPrincipalUnknown},
		{"unknown target SPN", "alice", e.unknownSPN, kerberos.ErrServerUnknown, kerberos.CodeSPrincipalUnknown},
		{"disabled user", "dave", e.mailSPN, kerberos.ErrPolicy, kerberos.CodePolicy},
		{"target account without keys", "alice", e.keylessSPN, kerberos.ErrETypeNotSupported, kerberos.CodeETypeNoSupp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Impersonate(ctx, tc.user, tc.spn)
			if !errors.Is(err, tc.want) {
				t.Fatalf("want %v, got %v", tc.want, err)
			}
			var ke *kerberos.KDCError
			if tc.code != 0 && (!errors.As(err, &ke) || ke.Code != tc.code) {
				t.Fatalf("want KDC code %d, got %#v", tc.code, err)
			}
			if tc.code == 0 && errors.As(err, &ke) {
				t.Fatalf("sent to the KDC: %v", err)
			}
		})
	}

	t.Run("service account without protocol transition", func(t *testing.T) {
		noPT := kerberos.NewWithPassword(noPTName, e.lab.Realm, svcPassword, e.cfg)
		ev, err := noPT.S4U2Self(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if ev.Forwardable() {
			t.Fatal("evidence forwardable without TRUSTED_TO_AUTH_FOR_DELEGATION")
		}
		_, err = noPT.S4U2Proxy(ctx, ev, e.mailSPN)
		var ke *kerberos.KDCError
		if !errors.Is(err, kerberos.ErrEvidenceNotForwardable) || !errors.As(err, &ke) || ke.Code != kerberos.CodeBadOption {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("wrong service password", func(t *testing.T) {
		bad := kerberos.NewWithPassword(svcName, e.lab.Realm, "wrong-password", e.cfg)
		_, err := bad.TGT(ctx)
		if !errors.Is(err, kerberos.ErrPreauthFailed) || strings.Contains(err.Error(), "wrong-password") {
			t.Fatalf("got %v", err)
		}
	})
}

// countingDialer counts connections to the KDC: one per exchange.
type countingDialer struct{ n atomic.Int64 }

func (d *countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.n.Add(1)
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

// 1,000 concurrent cold requests for one (user, SPN) cost the KDC exactly
// one S4U2Self and one S4U2Proxy.
func TestCacheAgainstKDC(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	d := &countingDialer{}
	c := e.clientVia(&kerberos.Transport{Config: e.cfg, Dialer: d})
	if _, err := c.TGT(ctx); err != nil { // the service TGT first: AS exchanges are not S4U
		t.Fatal(err)
	}
	d.n.Store(0)
	cache := &kerberos.Cache{Source: c}
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tk, err := cache.Ticket(ctx, "alice", e.mailSPN)
			if err == nil && tk.Client.PrincipalNameString() != "alice" {
				err = errors.New("wrong ticket")
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := d.n.Load(); n != 2 {
		t.Fatalf("%d KDC exchanges, want 2 (S4U2Self + S4U2Proxy)", n)
	}
	if s := cache.Stats(); s.Exchanges != 1 || s.Hits+s.Misses != 1000 {
		t.Fatalf("stats %+v", s)
	}
	// A refusal is remembered: carol twice costs one S4U2Self and one
	// S4U2Proxy (which the KDC refuses: her evidence is not forwardable).
	d.n.Store(0)
	for i := 0; i < 2; i++ {
		if _, err := cache.Ticket(ctx, "carol", e.mailSPN); !errors.Is(err, kerberos.ErrEvidenceNotForwardable) {
			t.Fatal(err)
		}
	}
	if n := d.n.Load(); n != 2 {
		t.Fatalf("%d KDC exchanges for two refused requests, want 2", n)
	}
}

// The service account from a keytab: ours (KeytabFromPassword) and samba-tool's.
func TestKeytabClient(t *testing.T) {
	e := setup(t)
	ours, err := kerberos.KeytabFromPassword(kerberos.KeytabSpec{Realm: e.lab.Realm, SAMAccountName: svcName, Password: svcPassword})
	if err != nil {
		t.Fatal(err)
	}
	for name, kt := range map[string]*keytab.Keytab{"ours": ours, "samba-tool": exportKeytab(t, e, svcName)} {
		c := kerberos.NewWithKeytab(svcName, e.lab.Realm, kt, e.cfg)
		if tk, err := c.Impersonate(context.Background(), "alice", e.mailSPN); err != nil || tk.Client.PrincipalNameString() != "alice" {
			t.Fatalf("%s keytab: %v %v", name, tk, err)
		}
	}
}

// The service TGT is reused while it has more than the renewal margin left,
// and fetched again inside it.
func TestTGTRenewal(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	c := e.client()
	t1, err := c.TGT(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if t2, _ := c.TGT(ctx); t2 != t1 {
		t.Fatal("TGT not reused")
	}
	// A margin longer than the TGT's life: every call is inside it.
	r := e.client()
	r.RenewBefore = 48 * time.Hour
	a, err := r.TGT(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.TGT(ctx)
	if err != nil || a == b {
		t.Fatalf("TGT not renewed inside the margin: %v", err)
	}
}

// KRB_AP_ERR_SKEW: our clock an hour ahead of the KDC's.
func TestClockSkew(t *testing.T) {
	e := setup(t)
	var mu sync.Mutex
	offset := time.Duration(0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(offset) }
	c := e.client()
	kerberos.SetClock(c, clock)
	ctx := context.Background()
	if _, err := c.TGT(ctx); err != nil { // in step: fine
		t.Fatal(err)
	}
	mu.Lock()
	offset = time.Hour
	mu.Unlock()
	_, err := c.S4U2Self(ctx, "alice") // the TGS authenticator is an hour off
	var ke *kerberos.KDCError
	if !errors.Is(err, kerberos.ErrClockSkew) || !errors.As(err, &ke) || ke.Code != kerberos.CodeSkew {
		t.Fatalf("want KRB_AP_ERR_SKEW, got %v", err)
	}
	// Pre-authentication an hour off is refused too.
	skewed := e.client()
	kerberos.SetClock(skewed, clock)
	if _, err := skewed.TGT(ctx); !errors.Is(err, kerberos.ErrClockSkew) {
		t.Fatalf("AS with a skewed clock: %v", err)
	}
}

// TestAccountThenImpersonate (issue 29): an account just resolved by its
// name costs one exchange more for its ticket, S4U2Proxy with the resolution's S4U2Self
// ticket as evidence, once; the next impersonation of the account asks for
// S4U2Self again, as does one for an account whose SID the resolution did
// not name. The ticket is the account's.
func TestAccountThenImpersonate(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	d := &countingDialer{}
	c := e.clientVia(&kerberos.Transport{Config: e.cfg, Dialer: d})
	if _, err := c.TGT(ctx); err != nil {
		t.Fatal(err)
	}
	d.n.Store(0)
	a, err := c.Account(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	tk, err := c.ImpersonateAccount(ctx, a, e.mailSPN)
	if err != nil || tk.Client.PrincipalNameString() != "alice" {
		t.Fatalf("the ticket: %v %v", tk, err)
	}
	if n := d.n.Load(); n != 2 {
		t.Errorf("resolving and impersonating a new account: %d KDC exchanges, want 2", n)
	}
	d.n.Store(0)
	if _, err := c.ImpersonateAccount(ctx, a, e.mailSPN); err != nil {
		t.Fatal(err)
	}
	if n := d.n.Load(); n != 2 {
		t.Errorf("the second impersonation: %d KDC exchanges, want 2 (S4U2Self again)", n)
	}
	// Resolved by its UPN, the account costs two as well. The KDC names the
	// client of that S4U2Self ticket by the UPN (an enterprise name), and
	// the service ticket made from it too; its PAC names alice, which is
	// what the acceptor (as IIS) takes the user from, and the ticket's SID
	// says so to a cache keyed by SID.
	d.n.Store(0)
	upn := "alice@" + e.lab.DNSDomain
	u, err := c.Account(ctx, upn)
	if err != nil {
		t.Fatal(err)
	}
	tk, err = c.ImpersonateAccount(ctx, u, e.mailSPN)
	if err != nil || tk.SID != a.SID || !tk.IsFor(upn) {
		t.Fatalf("the ticket of an account resolved by UPN: %v (SID %q) %v", tk, tk.SID, err)
	}
	if n := d.n.Load(); n != 2 {
		t.Errorf("resolving by UPN and impersonating: %d KDC exchanges, want 2", n)
	}
	h, err := kerberos.NegotiateHeader(tk)
	if err != nil {
		t.Fatal(err)
	}
	acc := &kerberos.Acceptor{Keytab: exportKeytab(t, e, asaName+"$"), Principal: asaName + "$"}
	id, err := acc.Accept(h)
	if err != nil || id.Account != "alice" || id.SID != a.SID || !strings.EqualFold(id.User, upn) {
		t.Fatalf("the acceptor's view of it: %+v %v", id, err)
	}
	// Another spelling of the UPN costs three: no ticket names its client
	// in a form the asker chose.
	d.n.Store(0)
	v, err := c.Account(ctx, strings.ToUpper(upn))
	if err != nil {
		t.Fatal(err)
	}
	if tk, err = c.ImpersonateAccount(ctx, v, e.mailSPN); err != nil || tk.Client.PrincipalNameString() != "alice" || tk.SID != a.SID {
		t.Fatalf("the ticket of an account resolved by another spelling of its UPN: %v %v", tk, err)
	}
	if n := d.n.Load(); n != 3 {
		t.Errorf("resolving by another spelling of the UPN and impersonating: %d KDC exchanges, want 3", n)
	}
	// A UPN that moves to another account within the 30 s: the KDC refuses
	// the kept evidence, and a fresh S4U2Self for the account's name gets
	// its ticket, without a new login of the service.
	admin, err := e.lab.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	base := fmt.Sprintf("kmv%06d", time.Now().UnixNano()%1e6)
	mover, holder := base+"a", base+"b"
	for _, r := range []ad.ServiceAccountRequest{{Name: mover, UserPrincipalName: mover + "@example.com"}, {Name: holder}} {
		r.Password, r.PasswordNeverExpires = lab.UserPassword, true
		if _, err := admin.CreateServiceAccount(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	d.n.Store(0)
	m, err := c.Account(ctx, mover+"@example.com")
	if err != nil {
		t.Fatal(err)
	}
	for _, mv := range [][2]string{{mover, mover + "-old@example.com"}, {holder, mover + "@example.com"}} {
		acct, err := admin.FindAccount(ctx, mv[0])
		if err != nil {
			t.Fatal(err)
		}
		// As the DC's system (samba-tool refuses a suffix the forest does not list).
		ldif := "dn: " + acct.DN + "\nchangetype: modify\nreplace: userPrincipalName\nuserPrincipalName: " + mv[1] + "\n"
		if out, err := e.lab.Ldbmodify(ctx, ldif); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	if tk, err = c.ImpersonateAccount(ctx, m, e.mailSPN); err != nil || tk.SID != m.SID || tk.Client.PrincipalNameString() != mover {
		t.Fatalf("after the UPN moved: %v %v", tk, err)
	}
	if n := d.n.Load(); n != 4 {
		t.Errorf("resolving, the UPN moved, impersonating: %d KDC exchanges, want 4 (no new login of the service)", n)
	}
	// A resolution's evidence serves its own SID only.
	if _, err := c.Account(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	other := *a
	other.SID += "9"
	if _, err := c.ImpersonateAccount(ctx, &other, e.mailSPN); !errors.Is(err, kerberos.ErrAccountChanged) {
		t.Errorf("an account of another SID under alice's name: %v, want ErrAccountChanged", err)
	}
}
