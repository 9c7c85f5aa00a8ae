package ad_test

import (
	"context"
	"encoding/base64"
	"errors"
	"testing"

	"github.com/segkcd/segkcd"
	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
)

// writeRBCD puts a descriptor on an account as the DC itself would
// (ldbmodify on its database): Samba lets no LDAP client write it.
func writeRBCD(t *testing.T, l *lab.Lab, dn string, sd []byte) {
	t.Helper()
	ldif := "dn: " + dn + "\nchangetype: modify\nreplace: msDS-AllowedToActOnBehalfOfOtherIdentity\n" +
		"msDS-AllowedToActOnBehalfOfOtherIdentity:: " + base64.StdEncoding.EncodeToString(sd) + "\n"
	if out, err := l.Ldbmodify(context.Background(), ldif); err != nil {
		t.Fatalf("ldbmodify: %v\n%s", err, out)
	}
}

// Resource-based delegation against Samba 4.22, both ways. What samba-tool
// delegation add-principal writes, we read. Our descriptor, put in place
// on the DC, ldbsearch decodes into the SDDL Windows and samba-tool write,
// samba-tool delegation show lists, and we read back; one we extend from
// Samba's keeps Samba's entry. Over LDAP, Samba refuses the write
// (systemOnly) with ErrSystemOnly and the advice to use samba-tool; steps
// with nothing to write are unchanged all the same.
func TestResourceDelegation(t *testing.T) {
	l, c, ctx := dial(t)
	t1 := must(t)(c.CreateComputerAccount(ctx, ad.ComputerAccountRequest{Name: "RBCDT1"})).Object
	t2 := must(t)(c.CreateComputerAccount(ctx, ad.ComputerAccountRequest{Name: "RBCDT2"})).Object
	for _, n := range []string{"svc_rbcd1", "svc_rbcd2"} {
		must(t)(c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: n, Password: "Rbcd-Passw0rd-1!"}))
	}
	svc2, err := c.FindAccount(ctx, "svc_rbcd2")
	if err != nil {
		t.Fatal(err)
	}

	// Samba writes, we read.
	sambaTool(t, l, "delegation", "add-principal", "RBCDT1$", "svc_rbcd1")
	if got, err := c.ResourceDelegation(ctx, "RBCDT1"); err != nil || len(got) != 1 || got[0] != "svc_rbcd1" {
		t.Fatalf("samba-tool's RBCD read as %v %v", got, err)
	}
	expect(t, segkcd.Unchanged)(c.AddResourceDelegation(ctx, "RBCDT1$", "svc_rbcd1"))
	expect(t, segkcd.Unchanged)(c.RemoveResourceDelegation(ctx, "RBCDT1$", "svc_rbcd2"))

	// Over LDAP Samba refuses the write, with advice.
	_, err = c.AddResourceDelegation(ctx, "RBCDT1$", "svc_rbcd2")
	if e := wantKind(t, err, ad.ErrSystemOnly); e.Hint() == "" {
		t.Fatal("no hint")
	}

	// Our descriptor from scratch, as AddResourceDelegation writes it.
	sd := &ad.SecurityDescriptor{Owner: "S-1-5-32-544", DACL: []ad.ACE{{Type: ad.ACEAccessAllowed, Mask: ad.RBCDAccessMask, SID: svc2.SID}}}
	b, err := sd.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	writeRBCD(t, l, t2, b)
	sddl := ldbAttr(t, l, "RBCDT2$", "msDS-AllowedToActOnBehalfOfOtherIdentity")
	if want := "O:BAD:(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;" + svc2.SID + ")"; len(sddl) != 1 || sddl[0] != want {
		t.Fatalf("ldbsearch decodes our descriptor as %q, want %q", sddl, want)
	}
	if out := sambaTool(t, l, "delegation", "show", "RBCDT2$"); !containsFold(out, "svc_rbcd2") {
		t.Fatalf("samba-tool delegation show does not list our principal:\n%s", out)
	}
	d, err := c.DelegationInfo(ctx, "RBCDT2$")
	if err != nil || !d.ResourceBased || len(d.AllowedToActOnBehalf) != 1 || d.AllowedToActOnBehalf[0] != "svc_rbcd2" || d.Kind() != "resource-based" {
		t.Fatalf("delegation info %+v %v", d, err)
	}

	// Samba's descriptor, extended by us: both principals, Samba's kept.
	acct, err := c.FindAccount(ctx, "RBCDT1$")
	if err != nil {
		t.Fatal(err)
	}
	if len(acct.ResourceDelegationSIDs) != 1 {
		t.Fatalf("account's RBCD SIDs %v", acct.ResourceDelegationSIDs)
	}
	raw := ldbAttr(t, l, "RBCDT1$", "msDS-AllowedToActOnBehalfOfOtherIdentity")
	if len(raw) != 1 {
		t.Fatalf("samba-tool's descriptor as SDDL: %v", raw)
	}
	got, err := c.ResourceDelegation(ctx, "RBCDT1$")
	if err != nil {
		t.Fatal(err)
	}
	sambaSD, err := c.ResourceDelegationDescriptor(ctx, acct.DN)
	if err != nil {
		t.Fatal(err)
	}
	sambaSD.DACL = append(sambaSD.DACL, ad.ACE{Type: ad.ACEAccessAllowed, Mask: ad.RBCDAccessMask, SID: svc2.SID})
	b, err = sambaSD.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	writeRBCD(t, l, t1, b)
	if got2, err := c.ResourceDelegation(ctx, "RBCDT1$"); err != nil || len(got2) != 2 || got2[0] != got[0] || got2[1] != "svc_rbcd2" {
		t.Fatalf("extended descriptor read as %v %v", got2, err)
	}
	audit, err := c.AuditDelegation(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range audit {
		if a.SAMAccountName == "RBCDT1$" {
			found = len(a.AllowedToActOnBehalf) == 2
		}
	}
	if !found {
		t.Fatalf("the audit does not name RBCDT1$'s two principals: %+v", audit)
	}
	expect(t, segkcd.Unchanged)(c.ClearResourceDelegation(ctx, "svc_rbcd1"))
	if _, err := c.AddResourceDelegation(ctx, "RBCDT2", "nosuchaccount"); !errors.Is(err, ad.ErrNotFound) {
		t.Fatalf("unknown principal: %v", err)
	}
}
