package deploy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"

	"github.com/segkcd/segkcd/exchange"
	"github.com/segkcd/segkcd/kerberos"
)

// Report is what Verify proved.
type Report struct {
	// User is the test user the gateway's account got a ticket for; SPN
	// the mail SPN it was for; Ticket the ticket (no key), as it prints.
	User, SPN, Ticket string
	// KVNO is the key version the KDC encrypted the ticket with, which is
	// the SPN holder's current one (msDS-KeyVersionNumber).
	KVNO int
	// AcceptedAs is the client name a keytab made from the ASA's
	// credential, as the Exchange servers hold it, read from the ticket in
	// a Negotiate token bound to a TLS channel, with the binding required
	// (Extended Protection): the proof that they decrypt it. Empty in single-server mode, where
	// only the server holds its computer account's key.
	AcceptedAs string
	// Servers says, for each server, whether it holds AD's password.
	Servers []exchange.ServerState
	// DCs is each DC's view of the ASA's key version and note
	// (Deployment.ASAViews), so that replication lag shows; empty in
	// single-server mode.
	DCs []DCView
	// Exposed are the path's accounts that the 2026 RC4 cut-off exposes
	// (Plan.Exposed), and the service account when the KDC used an RC4 key
	// for it (a password older than the domain's AES). The ticket itself is
	// AES: the Kerberos client refuses RC4 unless AllowRC4.
	Exposed []Exposure
}

// VerifyError is a deployment that does not hold: steps still pending, or
// a link of the chain that failed.
type VerifyError struct {
	Pending []Step // what a Plan would still change
	Err     error  // the link that failed, when the steps are all made
}

// Error lists the pending steps, or the link that failed.
func (e *VerifyError) Error() string {
	if len(e.Pending) > 0 {
		var parts []string
		for _, s := range e.Pending {
			parts = append(parts, s.Change.String())
		}
		return "deploy: verify: steps still to apply: " + strings.Join(parts, "; ")
	}
	return fmt.Sprintf("deploy: verify: %v", e.Err)
}

// Unwrap returns the failed link's error.
func (e *VerifyError) Unwrap() error { return e.Err }

// Verify reads everything back and proves the chain end to end: Plan must
// find nothing to do; the gateway's account gets a real S4U2Self and
// S4U2Proxy ticket for TestUser to the first mail SPN, at the SPN holder's
// current key version; and (with an ASA) a keytab made from the
// credential the Exchange servers hold accepts that ticket as TestUser.
func (d *Deployment) Verify(ctx context.Context) (*Report, error) {
	if d.TestUser == "" {
		return nil, fmt.Errorf("%w: no TestUser to ask a ticket for", ErrInvalid)
	}
	if d.Kerberos == nil {
		return nil, fmt.Errorf("%w: no Kerberos client", ErrInvalid)
	}
	p, err := d.Plan(ctx)
	if err != nil {
		return nil, err
	}
	if pending := p.Pending(); len(pending) > 0 {
		return nil, &VerifyError{Pending: pending}
	}
	fail := func(format string, a ...any) error { return &VerifyError{Err: fmt.Errorf(format, a...)} }
	spn := d.MailSPNs()[0]
	svc := d.Kerberos.ForAccount(d.ServiceAccount, d.ServiceAccountPassword)
	t, err := svc.Impersonate(ctx, d.TestUser, spn)
	if err != nil {
		return nil, fail("S4U for %s to %s as %s: %w", d.TestUser, spn, d.ServiceAccount, err)
	}
	if !t.IsFor(d.TestUser) {
		return nil, fail("the ticket speaks for %s, not %s", t.ClientName(), d.TestUser)
	}
	holder, err := d.AD.FindAccount(ctx, d.spnHolder())
	if err != nil {
		return nil, fail("%w", err)
	}
	r := &Report{User: t.ClientName(), SPN: spn, Ticket: t.String(), KVNO: t.Ticket.EncPart.KVNO, Exposed: p.Exposed}
	if kt, err := svc.KeyType(ctx); err == nil && kt != 0 && !kerberos.IsAES(kt) {
		r.Exposed = append(r.Exposed, Exposure{Account: d.ServiceAccount, Reasons: []string{fmt.Sprintf(
			"the KDC used its key of %s, not AES: its password predates the domain's AES keys; set it again", kerberos.ETypeName(kt))}})
	}
	if r.KVNO != holder.KeyVersion {
		// Another DC's KDC may have issued it before replication brought
		// it the last roll: that is lag, not a wrong SPN.
		if d.ASA != "" {
			if views, err := d.ASAViews(ctx); err == nil {
				var seen []string
				for _, v := range views {
					if v.Err == nil {
						seen = append(seen, fmt.Sprintf("%s holds version %d", v.DC.DNSHostName, v.KeyVersion))
					}
				}
				for _, v := range views {
					if v.Err == nil && v.KeyVersion != views[0].KeyVersion {
						return nil, fail("the ticket is encrypted with key version %d of %s, and the DCs differ (%s): replication has not settled; verify again in a minute",
							r.KVNO, holder.SAMAccountName, strings.Join(seen, ", "))
					}
				}
			}
		}
		return nil, fail("the ticket is encrypted with key version %d of %s, which holds version %d: the SPN resolves elsewhere", r.KVNO, holder.SAMAccountName, holder.KeyVersion)
	}
	if d.ASA == "" {
		return r, nil
	}
	org, roll := d.org(), d.roll()
	kt, err := org.ASAKeytab(ctx, roll, "")
	if err != nil {
		return nil, fail("%w", err)
	}
	// The token as the gateway sends it to an Exchange with Extended
	// Protection: bound to its TLS channel (here a certificate hash of
	// Verify's own, which has no connection to Exchange), and accepted by
	// the ASA's keys with that binding required (IIS tokenChecking Require).
	cb := verifyBinding()
	h, err := kerberos.NegotiateHeaderBound(t, cb)
	if err != nil {
		return nil, fail("%w", err)
	}
	id, err := (&kerberos.Acceptor{Keytab: kt, Principal: d.asaSAM(),
		TokenChecking: kerberos.TokenCheckingRequire, ChannelBinding: cb}).Accept(h)
	if err != nil {
		return nil, fail("the ASA's credential does not accept the ticket: %w", err)
	}
	if !strings.EqualFold(id.User, strings.SplitN(d.TestUser, "@", 2)[0]) {
		return nil, fail("accepted as %s, not %s", id.User, d.TestUser)
	}
	r.AcceptedAs = id.User + "@" + id.Realm
	if r.Servers, err = org.CheckASA(ctx, roll); err != nil {
		return nil, fail("%w", err)
	}
	for _, st := range r.Servers {
		if !st.Decrypts() {
			return nil, fail("%w: %s", errCannotDecrypt, st)
		}
	}
	if r.DCs, err = d.ASAViews(ctx); err != nil {
		return nil, fail("%w", err)
	}
	return r, nil
}

var errCannotDecrypt = errors.New("a server cannot decrypt")

// verifyBinding is a tls-server-end-point channel binding (RFC 5929) for a
// certificate hash of Verify's own.
func verifyBinding() kerberos.ChannelBinding {
	h := sha256.Sum256([]byte("segkcd deploy.Verify: a TLS channel to Exchange"))
	return append(kerberos.ChannelBinding("tls-server-end-point:"), h[:]...)
}
