package deploy

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/segkcd/segkcd/ad"
)

// DCView is one domain controller's view of the ASA. AD replicates
// multi-master and with a lag: a DC that has not yet replicated the last
// roll shows an older key version, and its KDC issues tickets under the old
// key until it does. The Exchange servers' Previous credential (the
// password before the roll) is what decrypts those tickets meanwhile.
type DCView struct {
	DC ad.DomainController
	// Err is why the DC could not be read (down, unreachable, refused the
	// bind); the fields below are zero then.
	Err error
	// KeyVersion is the ASA's msDS-KeyVersionNumber on this DC, and
	// PasswordSet its pwdLastSet.
	KeyVersion  int
	PasswordSet time.Time
	// Journal is the roll journal in the ASA's note on this DC (zero when
	// the note is empty); Note is the note's text when it is not a journal.
	Journal Journal
	Note    string
}

// String is one line: the DC, its place and role, and its view.
func (v DCView) String() string {
	return v.DC.DNSHostName + " (" + v.Role() + "): " + v.View()
}

// Role is the DC's site, and whether it holds the PDC emulator role or is
// read-only.
func (v DCView) Role() string {
	r := "site " + v.DC.Site
	if v.DC.PDC {
		r += ", PDC emulator"
	}
	if v.DC.ReadOnly {
		r += ", read-only"
	}
	return r
}

// View is what the DC holds for the ASA, or why it could not be read.
func (v DCView) View() string {
	if v.Err != nil {
		return "unreachable: " + v.Err.Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "ASA key version %d, password set %s", v.KeyVersion, v.PasswordSet.UTC().Format(time.RFC3339))
	switch j := v.Journal; {
	case v.Note != "":
		fmt.Fprintf(&b, ", note of %d characters that is not a roll journal", len(v.Note))
	case j.Kind == "":
		b.WriteString(", no roll journal")
	case j.Done:
		fmt.Fprintf(&b, ", last roll done by %s (claimed %s)", j.Owner, j.Claimed.UTC().Format(time.RFC3339))
	default:
		fmt.Fprintf(&b, ", roll claimed by %s at %s, unfinished", j.Owner, j.Claimed.UTC().Format(time.RFC3339))
	}
	return b.String()
}

// ASAViews reads the ASA on every DC of the domain (each within 15
// seconds), so that replication lag, and a DC that is down, are visible.
// The error is for the list of DCs, which the Deployment's AD connection
// reads; a DC that cannot be read has its Err set.
func (d *Deployment) ASAViews(ctx context.Context) ([]DCView, error) {
	if d.AD == nil || d.ASA == "" {
		return nil, fmt.Errorf("%w: ASAViews needs an AD connection and an ASA", ErrInvalid)
	}
	dcs, err := d.AD.DomainControllers(ctx)
	if err != nil {
		return nil, err
	}
	sam := d.asaSAM()
	views := make([]DCView, len(dcs))
	// All at once: a DC that is down costs its bound once, not once per DC.
	var wg sync.WaitGroup
	for i, dc := range dcs {
		views[i] = DCView{DC: dc}
		wg.Add(1)
		go func() {
			defer wg.Done()
			views[i].Err = func() error {
				cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
				defer cancel()
				c, err := d.AD.DialDC(cctx, dc)
				if err != nil {
					return err
				}
				defer c.Close()
				acct, err := c.FindAccount(cctx, sam)
				if err != nil {
					return err
				}
				views[i].KeyVersion, views[i].PasswordSet = acct.KeyVersion, fileTime(acct.PasswordLastSet)
				note, err := c.ReadNote(cctx, sam)
				if err != nil {
					return err
				}
				if views[i].Journal, err = ParseJournal(note); err != nil {
					views[i].Note = note
				}
				return nil
			}()
		}()
	}
	wg.Wait()
	return views, nil
}

// atPDC is the deployment with its AD connection on the PDC emulator and
// its Kerberos client at that DC's KDC, for a roll: AD replicates
// multi-master, so a compare-and-swap of the claim is a lock only if every
// replica swaps on the same DC, and another DC's KDC issues tickets under
// the old key until replication reaches it. The caller closes the
// returned deployment's AD. Without the PDC emulator the error matches
// ad.ErrPDCUnavailable: the roll waits, it never writes elsewhere.
func (d *Deployment) atPDC(ctx context.Context) (*Deployment, ad.DomainController, error) {
	pdc, dc, err := d.AD.DialPDC(ctx)
	if err != nil {
		return nil, dc, fmt.Errorf("deploy: the roll waits for the PDC emulator, the one DC it writes to: %w", err)
	}
	kc, err := d.Kerberos.AtKDCs(net.JoinHostPort(pdc.IP().String(), "88"))
	if err != nil {
		pdc.Close()
		return nil, dc, err
	}
	at := *d
	at.AD, at.Kerberos = pdc, kc
	return &at, dc, nil
}
