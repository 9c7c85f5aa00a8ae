package ad_test

import (
	"context"
	"crypto/tls"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/segkcd/segkcd"
	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
	"github.com/segkcd/segkcd/kerberos"
)

func TestDialModes(t *testing.T) {
	l, c, ctx := dial(t)
	info := c.DomainInfo()
	if info.DNSDomain != l.DNSDomain || info.Realm != l.Realm || info.NetBIOSName != l.Domain {
		t.Fatalf("domain info %+v", info)
	}
	// The domain SID, read independently from sam.ldb.
	out, err := l.Ldbsearch(ctx, l.BaseDN, "(objectClass=domain)", "objectSid")
	if err != nil {
		t.Fatal(err)
	}
	if info.DomainSID == "" || !strings.Contains(out, "objectSid: "+info.DomainSID) {
		t.Fatalf("domain SID %q not in ldbsearch output:\n%s", info.DomainSID, out)
	}
	if !c.TLS() {
		t.Fatal("LDAPS connection reports no TLS")
	}

	cfg, err := l.ADConfig()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("StartTLS", func(t *testing.T) {
		st := cfg
		st.URL = l.LDAPURL()
		c, err := ad.Dial(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if !c.TLS() {
			t.Fatal("StartTLS connection reports no TLS")
		}
		if _, err := c.FindAccount(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("UPN bind", func(t *testing.T) {
		u := cfg
		u.Bind = ad.SimpleBind{Username: "alice@" + l.DNSDomain, Password: lab.UserPassword}
		c, err := ad.Dial(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	})

	t.Run("wrong password", func(t *testing.T) {
		bad := cfg
		bad.Bind = ad.SimpleBind{Username: l.AdminBindName(), Password: "not-the-password"}
		_, err := ad.Dial(ctx, bad)
		e := wantKind(t, err, ad.ErrInvalidCredentials)
		if e.LDAPCode != 49 {
			t.Fatalf("LDAP code %d", e.LDAPCode)
		}
		if strings.Contains(err.Error(), "not-the-password") {
			t.Fatal("password in error text")
		}
	})

	t.Run("untrusted certificate", func(t *testing.T) {
		u := cfg
		u.TLSConfig = &tls.Config{ServerName: l.HostName} // system roots do not know the lab CA
		_, err := ad.Dial(ctx, u)
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("want a certificate error, got %v", err)
		}
	})

	t.Run("kerberos bind", func(t *testing.T) {
		kc, err := kerberos.LoadConfig(l.Krb5Conf)
		if err != nil {
			t.Fatal(err)
		}
		cl := kerberos.NewWithPassword("alice", l.Realm, lab.UserPassword, kc)
		k := cfg
		k.Bind = ad.KerberosBind{Client: cl}
		c, err := ad.Dial(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		a, err := c.FindAccount(ctx, "bob")
		if err != nil || a.SAMAccountName != "bob" {
			t.Fatalf("search after GSSAPI bind: %v %v", a, err)
		}
	})

	t.Run("empty password is refused before sending", func(t *testing.T) {
		u := cfg
		u.Bind = ad.SimpleBind{Username: "alice"}
		_, err := ad.Dial(ctx, u)
		wantKind(t, err, ad.ErrInvalidArgument)
	})
}

func TestFindAccount(t *testing.T) {
	l, c, ctx := dial(t)
	alice, err := c.FindAccount(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if alice.Mail != "alice@"+l.DNSDomain || alice.UserPrincipalName != "alice@"+l.DNSDomain ||
		!strings.HasPrefix(alice.SID, c.DomainInfo().DomainSID+"-") {
		t.Fatalf("alice: %+v", alice)
	}
	for _, name := range []string{l.Domain + `\alice`, "alice@" + l.DNSDomain, "ALICE@" + l.Realm, alice.DN, "Alice"} {
		a, err := c.FindAccount(ctx, name)
		if err != nil || a.DN != alice.DN {
			t.Errorf("FindAccount(%q) = %v, %v", name, a, err)
		}
	}
	dc, err := c.FindAccount(ctx, "dc1")
	if err != nil || !dc.IsComputer() || dc.SAMAccountName != "DC1$" {
		t.Fatalf("dc1: %v %v", dc, err)
	}
	// Filter metacharacters are escaped: these find nothing rather than everything.
	for _, name := range []string{"*", "alice)(sAMAccountName=*", "nobody", `OTHER\alice`} {
		_, err := c.FindAccount(ctx, name)
		wantKind(t, err, ad.ErrNotFound)
	}
}

func TestCreateComputerAccount(t *testing.T) {
	l, c, ctx := dial(t)
	req := ad.ComputerAccountRequest{Name: "ADASA1", Description: "Exchange ASA (test)"}
	expect(t, segkcd.Created)(c.CreateComputerAccount(ctx, req))
	ch, err := c.CreateComputerAccount(ctx, req)
	wantAction(t, ch, err, segkcd.Unchanged)

	// Our read.
	a, err := c.FindAccount(ctx, "ADASA1")
	if err != nil {
		t.Fatal(err)
	}
	if a.SAMAccountName != "ADASA1$" || a.UserAccountControl != ad.UACWorkstationTrustAccount ||
		a.SupportedEncryptionTypes != ad.EncAES || a.PrimaryGroupID != 515 || len(a.MemberOf) != 0 ||
		a.DNSHostName != "adasa1."+l.DNSDomain {
		t.Fatalf("ASA: %+v", a)
	}
	// sam.ldb's view.
	if got := ldbAttr(t, l, "ADASA1$", "userAccountControl"); len(got) != 1 || got[0] != "4096" {
		t.Fatalf("ldb userAccountControl %v", got)
	}
	if got := ldbAttr(t, l, "ADASA1$", "msDS-SupportedEncryptionTypes"); len(got) != 1 || got[0] != "24" {
		t.Fatalf("ldb msDS-SupportedEncryptionTypes %v", got)
	}
	if got := ldbAttr(t, l, "ADASA1$", "primaryGroupID"); len(got) != 1 || got[0] != "515" {
		t.Fatalf("ldb primaryGroupID %v", got)
	}
	// It has keys from the start (random password): samba-tool exports AES keys for it.
	kt := l.Dir + "/adasa1.keytab"
	out := sambaTool(t, l, "domain", "exportkeytab", kt, "--principal=ADASA1$")
	klist, err := l.Command(ctx, "unused", "klist", "-k", "-e", kt).CombinedOutput()
	if err != nil || !strings.Contains(string(klist), "aes256-cts") {
		t.Fatalf("keytab of new computer: %s %s %v", out, klist, err)
	}

	// Drift is repaired and reported.
	req.EncryptionTypes = ad.EncAES | ad.EncRC4HMAC
	ch, err = c.CreateComputerAccount(ctx, req)
	wantAction(t, ch, err, segkcd.Modified)
	if got := ldbAttr(t, l, "ADASA1$", "msDS-SupportedEncryptionTypes"); got[0] != "28" {
		t.Fatalf("after update: %v", got)
	}

	// A user holding the name is not taken for a computer.
	_, err = c.CreateComputerAccount(ctx, ad.ComputerAccountRequest{Name: "bob$"})
	if err != nil {
		t.Fatalf("bob$ (a computer) may coexist with user bob: %v", err)
	}
	_, err = c.CreateComputerAccount(ctx, ad.ComputerAccountRequest{Name: "this-name-is-too-long"})
	wantKind(t, err, ad.ErrInvalidArgument)
}

func TestCreateServiceAccount(t *testing.T) {
	l, c, ctx := dial(t)
	req := ad.ServiceAccountRequest{Name: "svc_test1", Password: "Svc-Passw0rd-Test!", PasswordNeverExpires: true}
	expect(t, segkcd.Created)(c.CreateServiceAccount(ctx, req))
	ch, err := c.CreateServiceAccount(ctx, req)
	wantAction(t, ch, err, segkcd.Unchanged)
	// MIT kinit with the password proves the account and its keys.
	if err := kinit(t, l, "svc_test1.cc", "svc_test1", req.Password); err != nil {
		t.Fatalf("kinit: %v", err)
	}
	uac := ldbAttr(t, l, "svc_test1", "userAccountControl")
	if len(uac) != 1 || uac[0] != strconv.Itoa(int(ad.UACNormalAccount|ad.UACDontExpirePassword)) {
		t.Fatalf("userAccountControl %v", uac)
	}
	if upn := ldbAttr(t, l, "svc_test1", "userPrincipalName"); len(upn) != 1 || upn[0] != "svc_test1@"+l.DNSDomain {
		t.Fatalf("UPN %v", upn)
	}

	// Password policy: AD code 0000052D, and the password is nowhere in the error.
	_, err = c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: "svc_weak", Password: "abc"})
	e := wantKind(t, err, ad.ErrPasswordPolicy)
	if e.Code != 0x52D || e.LDAPCode != 19 {
		t.Fatalf("codes: LDAP %d AD %08X", e.LDAPCode, e.Code)
	}
	if strings.Contains(err.Error(), `"abc"`) {
		t.Fatalf("password in error: %v", err)
	}
	// Nothing was left behind.
	if _, err := c.FindAccount(ctx, "svc_weak"); !errors.Is(err, ad.ErrNotFound) {
		t.Fatalf("svc_weak exists after a failed add: %v", err)
	}
	_, err = c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: "svc_nopw"})
	wantKind(t, err, ad.ErrInvalidArgument)
	// A computer name is not a user.
	_, err = c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: "DC1$", Password: "x"})
	wantKind(t, err, ad.ErrExists)
}

func TestSPN(t *testing.T) {
	l, c, ctx := dial(t)
	must(t)(c.CreateComputerAccount(ctx, ad.ComputerAccountRequest{Name: "ADASA2"}))
	must(t)(c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: "svc_spn", Password: "Svc-Passw0rd-Spn!"}))
	const spn = "http/mail2-ad." + "corp.example.test"

	ch, err := c.SetSPN(ctx, "ADASA2", spn)
	wantAction(t, ch, err, segkcd.Modified)
	ch, err = c.SetSPN(ctx, "ADASA2$", spn)
	wantAction(t, ch, err, segkcd.Unchanged)
	ch, err = c.SetSPN(ctx, "ADASA2$", strings.ToUpper(spn)) // SPNs compare case-insensitively
	wantAction(t, ch, err, segkcd.Unchanged)

	spns, err := c.ListSPNs(ctx, "ADASA2")
	if err != nil || len(spns) != 1 || spns[0] != spn {
		t.Fatalf("ListSPNs: %v %v", spns, err)
	}
	if out := sambaTool(t, l, "spn", "list", "ADASA2$"); !strings.Contains(out, spn) {
		t.Fatalf("samba-tool spn list:\n%s", out)
	}

	// setspn -S: the same SPN on another account is refused and names the holder.
	_, err = c.SetSPN(ctx, "svc_spn", strings.ToUpper(spn))
	wantKind(t, err, ad.ErrDuplicateSPN)
	var dup *ad.DuplicateSPNError
	if !errors.As(err, &dup) || len(dup.Holders) != 1 || !strings.HasPrefix(dup.Holders[0], "CN=ADASA2,") {
		t.Fatalf("duplicate: %#v", dup)
	}
	// ... and so is http/X when HOST/X is on another account (the DC here).
	_, err = c.SetSPN(ctx, "svc_spn", "HTTP/dc1."+l.DNSDomain)
	if !errors.As(err, &dup) || !strings.EqualFold(dup.Match, "HOST/dc1."+l.DNSDomain) || !strings.HasPrefix(dup.Holders[0], "CN=DC1,") {
		t.Fatalf("HOST alias duplicate: %v", err)
	}
	if out := sambaTool(t, l, "spn", "list", "svc_spn"); strings.Contains(strings.ToLower(out), "http/") {
		t.Fatalf("refused SPN was written:\n%s", out)
	}
	// A class that is no alias of host is free to share the host name.
	ch, err = c.SetSPN(ctx, "svc_spn", "custom/dc1."+l.DNSDomain)
	wantAction(t, ch, err, segkcd.Modified)

	_, err = c.SetSPN(ctx, "svc_spn", "no-slash")
	wantKind(t, err, ad.ErrInvalidArgument)

	ch, err = c.RemoveSPN(ctx, "ADASA2", strings.ToUpper(spn))
	wantAction(t, ch, err, segkcd.Modified)
	ch, err = c.RemoveSPN(ctx, "ADASA2", spn)
	wantAction(t, ch, err, segkcd.Unchanged)
	if out := sambaTool(t, l, "spn", "list", "ADASA2$"); strings.Contains(out, spn) {
		t.Fatalf("SPN still listed:\n%s", out)
	}
}

func TestDelegation(t *testing.T) {
	l, c, ctx := dial(t)
	must(t)(c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: "svc_deleg", Password: "Svc-Passw0rd-Deleg!"}))
	targets := []string{"http/mail3-ad." + l.DNSDomain, "http/mail3-ad"}

	expect(t, segkcd.Modified)(c.SetProtocolTransition(ctx, "svc_deleg", true))
	ch, err := c.SetProtocolTransition(ctx, "svc_deleg", true)
	wantAction(t, ch, err, segkcd.Unchanged)
	expect(t, segkcd.Modified)(c.AddAllowedToDelegateTo(ctx, "svc_deleg", targets...))
	ch, err = c.AddAllowedToDelegateTo(ctx, "svc_deleg", strings.ToUpper(targets[0]))
	wantAction(t, ch, err, segkcd.Unchanged)

	d, err := c.DelegationInfo(ctx, "svc_deleg")
	if err != nil || !d.ProtocolTransition || d.Unconstrained || len(d.AllowedToDelegateTo) != 2 ||
		d.Kind() != "constrained with protocol transition" {
		t.Fatalf("DelegationInfo: %+v %v", d, err)
	}
	out := sambaTool(t, l, "delegation", "show", "svc_deleg")
	for _, want := range []string{"UF_TRUSTED_TO_AUTHENTICATE_FOR_DELEGATION: True", "UF_TRUSTED_FOR_DELEGATION: False",
		"msDS-AllowedToDelegateTo: " + targets[0], "msDS-AllowedToDelegateTo: " + targets[1]} {
		if !strings.Contains(out, want) {
			t.Fatalf("samba-tool delegation show lacks %q:\n%s", want, out)
		}
	}

	// Exact set: one target stays, the other goes.
	ch, err = c.SetAllowedToDelegateTo(ctx, "svc_deleg", targets[:1])
	wantAction(t, ch, err, segkcd.Modified)
	ch, err = c.SetAllowedToDelegateTo(ctx, "svc_deleg", targets[:1])
	wantAction(t, ch, err, segkcd.Unchanged)
	if got := ldbAttr(t, l, "svc_deleg", "msDS-AllowedToDelegateTo"); len(got) != 1 || got[0] != targets[0] {
		t.Fatalf("ldb after set: %v", got)
	}

	// Audit: the DC (unconstrained by design) and our account.
	audit, err := c.AuditDelegation(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for _, a := range audit {
		kinds[a.SAMAccountName] = a.Kind()
	}
	if kinds["DC1$"] != "unconstrained" || kinds["svc_deleg"] != "constrained with protocol transition" {
		t.Fatalf("audit: %v", kinds)
	}
	if _, ok := kinds["alice"]; ok {
		t.Fatal("audit lists alice, who has no delegation")
	}

	// Unconstrained delegation is refused outright.
	_, err = c.SetAccountFlags(ctx, "svc_deleg", ad.UACTrustedForDelegation, 0)
	wantKind(t, err, ad.ErrUnconstrainedDelegation)
	if out := sambaTool(t, l, "delegation", "show", "svc_deleg"); !strings.Contains(out, "UF_TRUSTED_FOR_DELEGATION: False") {
		t.Fatalf("unconstrained was set:\n%s", out)
	}

	expect(t, segkcd.Modified)(c.RemoveAllowedToDelegateTo(ctx, "svc_deleg", targets...))
	ch, err = c.RemoveAllowedToDelegateTo(ctx, "svc_deleg", targets...)
	wantAction(t, ch, err, segkcd.Unchanged)
	expect(t, segkcd.Modified)(c.SetProtocolTransition(ctx, "svc_deleg", false))
	out = sambaTool(t, l, "delegation", "show", "svc_deleg")
	if !strings.Contains(out, "UF_TRUSTED_TO_AUTHENTICATE_FOR_DELEGATION: False") || strings.Contains(out, "msDS-AllowedToDelegateTo: ") {
		t.Fatalf("after removal:\n%s", out)
	}
}

func TestAccountFlagsAndEncryptionTypes(t *testing.T) {
	l, c, ctx := dial(t)
	must(t)(c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: "svc_flags", Password: "Svc-Passw0rd-Flags!"}))
	ch, err := c.SetAccountFlags(ctx, "svc_flags", ad.UACNotDelegated|ad.UACDontExpirePassword, 0)
	wantAction(t, ch, err, segkcd.Modified)
	ch, err = c.SetAccountFlags(ctx, "svc_flags", ad.UACNotDelegated, 0)
	wantAction(t, ch, err, segkcd.Unchanged)
	want := ad.UACNormalAccount | ad.UACNotDelegated | ad.UACDontExpirePassword
	if got := ldbAttr(t, l, "svc_flags", "userAccountControl"); got[0] != strconv.Itoa(int(want)) {
		t.Fatalf("ldb userAccountControl %v, want %d", got, want)
	}
	ch, err = c.SetAccountFlags(ctx, "svc_flags", 0, ad.UACNotDelegated)
	wantAction(t, ch, err, segkcd.Modified)
	_, err = c.SetAccountFlags(ctx, "svc_flags", ad.UACNotDelegated, ad.UACNotDelegated)
	wantKind(t, err, ad.ErrInvalidArgument)

	// segkcd.Created AES-only (no Kerberoastable RC4 tickets to its SPNs).
	if got := ldbAttr(t, l, "svc_flags", "msDS-SupportedEncryptionTypes"); got[0] != "24" {
		t.Fatalf("created with enctypes %v, want 24", got)
	}
	ch, err = c.SetSupportedEncryptionTypes(ctx, "svc_flags", ad.EncAES|ad.EncRC4HMAC)
	wantAction(t, ch, err, segkcd.Modified)
	ch, err = c.SetSupportedEncryptionTypes(ctx, "svc_flags", ad.EncAES)
	wantAction(t, ch, err, segkcd.Modified)
	ch, err = c.SetSupportedEncryptionTypes(ctx, "svc_flags", ad.EncAES)
	wantAction(t, ch, err, segkcd.Unchanged)
	if got := ldbAttr(t, l, "svc_flags", "msDS-SupportedEncryptionTypes"); got[0] != "24" {
		t.Fatalf("ldb enctypes %v", got)
	}
	// The KDC now issues AES tickets for it: MIT kvno shows the etype.
	if err := kinit(t, l, "flags.cc", "alice", lab.UserPassword); err != nil {
		t.Fatal(err)
	}
	must(t)(c.SetSPN(ctx, "svc_flags", "HTTP/flags.test"))
	if out, err := l.Command(ctx, "flags.cc", "kvno", "HTTP/flags.test").CombinedOutput(); err != nil {
		t.Fatalf("kvno: %s", out)
	}
	out, _ := l.Command(ctx, "flags.cc", "klist", "-e").CombinedOutput()
	if !strings.Contains(string(out), "HTTP/flags.test") || !strings.Contains(string(out), "aes256-cts") {
		t.Fatalf("ticket not AES:\n%s", out)
	}
}

func TestPasswords(t *testing.T) {
	l, c, ctx := dial(t)
	must(t)(c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: "svc_pw", Password: "First-Passw0rd!"}))
	second, err := ad.GeneratePassword(0, "svc_pw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ResetPassword(ctx, "svc_pw", second); err != nil {
		t.Fatal(err)
	}
	if err := kinit(t, l, "pw.cc", "svc_pw", second); err != nil {
		t.Fatalf("kinit after reset: %v", err)
	}
	if err := kinit(t, l, "pw.cc", "svc_pw", "First-Passw0rd!"); err == nil {
		t.Fatal("old password still works after reset")
	}

	// A user's own change needs the old password.
	if _, err := c.ChangePassword(ctx, "svc_pw", "wrong-old-Passw0rd", "Third-Passw0rd!"); err == nil {
		t.Fatal("change with a wrong old password succeeded")
	} else if strings.Contains(err.Error(), "wrong-old") || strings.Contains(err.Error(), "Third-Passw0rd") {
		t.Fatalf("password in error: %v", err)
	}
	// Samba applies the minimum password age to a user's own change; lift it
	// for svc_pw alone (a password settings object): the domain is every
	// test binary's.
	if out, err := l.SambaTool(ctx, "domain", "passwordsettings", "pso", "create", "ad-pw-age", "10", "--min-pwd-age=0"); err != nil && !strings.Contains(out, "already exists") {
		t.Fatalf("%v: %s", err, out)
	}
	sambaTool(t, l, "domain", "passwordsettings", "pso", "apply", "ad-pw-age", "svc_pw")
	if _, err := c.ChangePassword(ctx, "svc_pw", second, "Third-Passw0rd!"); err != nil {
		t.Fatal(err)
	}
	if err := kinit(t, l, "pw.cc", "svc_pw", "Third-Passw0rd!"); err != nil {
		t.Fatalf("kinit after change: %v", err)
	}
	_, err = c.ResetPassword(ctx, "svc_pw", "short")
	e := wantKind(t, err, ad.ErrPasswordPolicy)
	if e.Code != 0x52D {
		t.Fatalf("code %08X", e.Code)
	}

	// Without TLS, password writes are refused before anything is sent.
	before := ldbAttr(t, l, "svc_pw", "pwdLastSet")
	plain, err := ad.Dial(ctx, ad.Config{URL: l.LDAPURL(), PlaintextKerberosBind: true})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if plain.TLS() {
		t.Fatal("plaintext connection claims TLS")
	}
	_, err = plain.ResetPassword(ctx, "svc_pw", "Fourth-Passw0rd!")
	wantKind(t, err, ad.ErrTLSRequired)
	_, err = plain.ChangePassword(ctx, "svc_pw", "Third-Passw0rd!", "Fourth-Passw0rd!")
	wantKind(t, err, ad.ErrTLSRequired)
	_, err = plain.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: "svc_plain", Password: "x"})
	if err == nil {
		t.Fatal("anonymous plaintext create succeeded")
	}
	if after := ldbAttr(t, l, "svc_pw", "pwdLastSet"); after[0] != before[0] {
		t.Fatal("password changed over a plaintext connection")
	}
}

func TestGroups(t *testing.T) {
	l, c, ctx := dial(t)
	const group = "Remote Desktop Users"
	ch, err := c.AddGroupMember(ctx, group, "bob")
	wantAction(t, ch, err, segkcd.Modified)
	ch, err = c.AddGroupMember(ctx, group, "bob")
	wantAction(t, ch, err, segkcd.Unchanged)
	if out := sambaTool(t, l, "group", "listmembers", group); !strings.Contains(out, "bob") {
		t.Fatalf("samba-tool group listmembers:\n%s", out)
	}
	ch, err = c.RemoveGroupMember(ctx, group, "bob")
	wantAction(t, ch, err, segkcd.Modified)
	ch, err = c.RemoveGroupMember(ctx, group, "bob")
	wantAction(t, ch, err, segkcd.Unchanged)
	if out := sambaTool(t, l, "group", "listmembers", group); strings.Contains(out, "bob") {
		t.Fatalf("bob still a member:\n%s", out)
	}
	// A computer is in Domain Computers through its primary group.
	must(t)(c.CreateComputerAccount(ctx, ad.ComputerAccountRequest{Name: "ADASA3"}))
	ch, err = c.AddGroupMember(ctx, "Domain Computers", "ADASA3")
	wantAction(t, ch, err, segkcd.Unchanged)
	_, err = c.RemoveGroupMember(ctx, "Domain Computers", "ADASA3")
	wantKind(t, err, ad.ErrUnwilling)
	_, err = c.AddGroupMember(ctx, "alice", "bob")
	wantKind(t, err, ad.ErrInvalidArgument)
}

func TestContextCancellation(t *testing.T) {
	l := theLab.Get(t)
	ctx, cancel := context.WithCancel(context.Background())
	c, err := l.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cancel()
	_, err = c.FindAccount(ctx, "alice")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	var e *ad.Error
	if !errors.As(err, &e) || e.Op != "find account" {
		t.Fatalf("want *ad.Error for find account, got %#v", err)
	}
}
