package kerberos_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/kerberos"
)

// Resource-based constrained delegation on the Samba 4.22 lab: a service
// account with protocol transition and no msDS-AllowedToDelegateTo gets
// alice's ticket to a target whose msDS-AllowedToActOnBehalfOfOtherIdentity
// names it (written by samba-tool, as Samba takes it only from there); the
// target's own key (samba-tool exportkeytab) accepts it, and MIT kvno -U
// -P gets the same. Removed from the target, the principal is refused.
// Without protocol transition the evidence is not forwardable and Samba
// refuses it even for RBCD (Windows would accept it, MS-SFU 3.2.5.2.2).
func TestRBCD(t *testing.T) {
	e := setup(t)
	l := e.lab
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := l.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const pw = "Rbcd-Svc-Passw0rd!"
	spn := "http/rbcd." + l.DNSDomain
	for _, step := range []func() error{
		func() error {
			_, err := c.CreateComputerAccount(ctx, ad.ComputerAccountRequest{Name: "RBCDSRV"})
			return err
		},
		func() error { _, err := c.SetSPN(ctx, "RBCDSRV$", spn); return err },
		func() error {
			_, err := c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: "svc_rbcdk", Password: pw, PasswordNeverExpires: true})
			return err
		},
		func() error { _, err := c.SetSPN(ctx, "svc_rbcdk", "HTTP/svc_rbcdk"); return err },
		func() error { _, err := c.SetProtocolTransition(ctx, "svc_rbcdk", true); return err },
		func() error {
			_, err := c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: "svc_rbcdn", Password: pw, PasswordNeverExpires: true})
			return err
		},
		func() error { _, err := c.SetSPN(ctx, "svc_rbcdn", "HTTP/svc_rbcdn"); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"svc_rbcdk", "svc_rbcdn"} {
		if out, err := l.SambaTool(ctx, "delegation", "add-principal", "RBCDSRV$", p); err != nil {
			t.Fatalf("samba-tool delegation add-principal: %v\n%s", err, out)
		}
	}
	if d, err := c.DelegationInfo(ctx, "svc_rbcdk"); err != nil || len(d.AllowedToDelegateTo) != 0 {
		t.Fatalf("svc_rbcdk has classic delegation: %+v %v", d, err)
	}

	svc := kerberos.NewWithPassword("svc_rbcdk", l.Realm, pw, e.cfg)
	tk, err := svc.Impersonate(ctx, "alice", spn)
	if err != nil {
		t.Fatalf("S4U through RBCD: %v", err)
	}
	kt, err := l.ExportKeytab(ctx, "RBCDSRV$")
	if err != nil {
		t.Fatal(err)
	}
	h, _ := kerberos.NegotiateHeader(tk)
	if id, err := (&kerberos.Acceptor{Keytab: kt, Principal: "RBCDSRV$"}).Accept(h); err != nil || id.User != "alice" {
		t.Fatalf("the target's key does not accept the RBCD ticket: %v", err)
	}
	cmd := l.Command(ctx, "rbcd.cc", "kinit", "-f", "svc_rbcdk")
	cmd.Stdin = strings.NewReader(pw + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kinit: %s", out)
	}
	if out, err := l.Command(ctx, "rbcd.cc", "kvno", "-U", "alice", "-P", spn).CombinedOutput(); err != nil {
		t.Fatalf("MIT kvno -U alice -P through RBCD: %s", out)
	}

	// Without protocol transition: non-forwardable evidence, refused by Samba.
	noPT := kerberos.NewWithPassword("svc_rbcdn", l.Realm, pw, e.cfg)
	_, err = noPT.Impersonate(ctx, "alice", spn)
	var ke *kerberos.KDCError
	if !errors.Is(err, kerberos.ErrEvidenceNotForwardable) || !errors.As(err, &ke) {
		t.Fatalf("RBCD with non-forwardable evidence on Samba: %v", err)
	}
	t.Logf("Samba 4.22, RBCD with non-forwardable evidence: KDC error %d %s", ke.Code, ke.Name)

	// Removed from the target: refused.
	if out, err := l.SambaTool(ctx, "delegation", "del-principal", "RBCDSRV$", "svc_rbcdk"); err != nil {
		t.Fatalf("samba-tool delegation del-principal: %v\n%s", err, out)
	}
	fresh := kerberos.NewWithPassword("svc_rbcdk", l.Realm, pw, e.cfg)
	_, err = fresh.Impersonate(ctx, "alice", spn)
	if !errors.As(err, &ke) || !errors.Is(err, kerberos.ErrNotDelegable) {
		t.Fatalf("after del-principal: %v", err)
	}
	t.Logf("Samba 4.22, RBCD principal removed: KDC error %d %s", ke.Code, ke.Name)
}
