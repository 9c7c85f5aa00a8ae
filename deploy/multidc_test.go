package deploy_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segkcd/segkcd"
	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/deploy"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
	"github.com/segkcd/segkcd/internal/testinfra/tcprelay"
	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/winrs"
)

// twoDCs is a domain of two DCs replicating with each other (issue 28).
var twoDCs lab.SharedDCs

// adAt is the AD configuration of a client that tries the DCs in order, by
// host name, resolved by the domain's DNS (Samba's, on the DCs).
func adAt(t *testing.T, order ...*lab.Lab) ad.Config {
	t.Helper()
	tc, err := order[0].TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	var urls []string
	for _, dc := range order {
		urls = append(urls, "ldaps://"+dc.HostName)
	}
	return ad.Config{URL: urls[0], URLs: urls[1:], TLSConfig: &tls.Config{RootCAs: tc.RootCAs},
		Resolver: lab.Resolver(order...), DialTimeout: 3 * time.Second,
		Bind: ad.SimpleBind{Username: order[0].AdminBindName(), Password: order[0].AdminPassword}}
}

func dialAt(t *testing.T, order ...*lab.Lab) *ad.Conn {
	t.Helper()
	c, err := ad.Dial(ctxT(t), adAt(t, order...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// pairEnv is a deployment on the two DCs: two Exchange servers' test
// hosts, AD reached DC1 first.
func pairEnv(t *testing.T, tag string) (*env, *lab.Lab, *lab.Lab) {
	t.Helper()
	dc1, dc2 := twoDCs.Get(t)
	e := &env{l: dc1}
	servers := e.startHosts(t)
	e.d = e.deploymentAt(t, servers, dc1, dc2)
	e.d.ASA, e.d.MailHosts = "ASA"+strings.ToUpper(tag), []string{"mail-" + tag + "." + dc1.DNSDomain}
	e.d.ServiceAccount, e.d.ServiceAccountPassword = "svc_"+tag, "Gw-"+tag+"-Passw0rd!"
	e.d.TestUser = "alice"
	return e, dc1, dc2
}

// deploymentAt is e's deployment as a replica whose DC locator tried the
// DCs in order sees it: its own AD connection, a Kerberos client of both
// KDCs, and WinRM clients of its own.
func (e *env) deploymentAt(t *testing.T, servers []deploy.Server, order ...*lab.Lab) *deploy.Deployment {
	t.Helper()
	var kdcs []string
	for _, dc := range order {
		kdcs = append(kdcs, dc.KDCAddr())
	}
	kcfg, err := kerberos.NewConfig(order[0].Realm, kdcs...)
	if err != nil {
		t.Fatal(err)
	}
	d := &deploy.Deployment{}
	if e.d != nil {
		*d = *e.d
	}
	d.AD, d.Kerberos, d.Progress = dialAt(t, order...), kerberos.NewWithPassword(order[0].AdminUser, order[0].Realm, order[0].AdminPassword, kcfg), nil
	d.Servers = append([]deploy.Server(nil), servers...)
	for i, h := range e.hosts {
		sh, err := winrs.New(h.ClientConfig())
		if err != nil {
			t.Fatal(err)
		}
		d.Servers[i].Shell = sh
	}
	return d
}

// on is what dc's own database says of the ASA: key version and note
// (-1 before the account has replicated there).
func on(t *testing.T, dc *lab.Lab, asa string) (int, string) {
	t.Helper()
	c := dialAt(t, dc)
	a, err := c.FindAccount(ctxT(t), asa)
	if errors.Is(err, ad.ErrNotFound) {
		return -1, ""
	}
	if err != nil {
		t.Fatal(err)
	}
	note, err := c.ReadNote(ctxT(t), asa)
	if err != nil {
		t.Fatal(err)
	}
	return a.KeyVersion, note
}

// converged waits until both DCs show the ASA at key version kvno with
// the same note, and returns the note.
func converged(t *testing.T, asa string, kvno int, dcs ...*lab.Lab) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		k1, n1 := on(t, dcs[0], asa)
		k2, n2 := on(t, dcs[1], asa)
		if k1 == kvno && k2 == kvno && n1 == n2 {
			return n1
		}
		if time.Now().After(deadline) {
			t.Fatalf("the DCs did not converge on key version %d: %s has %d, %s has %d; notes %q, %q", kvno, dcs[0].HostName, k1, dcs[1].HostName, k2, n1, n2)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// serversAgree checks that every server holds AD's password as Latest.
func serversAgree(t *testing.T, d *deploy.Deployment) {
	t.Helper()
	rc, err := (&deploy.Roller{Deployment: d}).Check(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range rc.Servers {
		if !st.LatestIsCurrent {
			t.Fatalf("after the roll: %s", st)
		}
	}
}

// Two replicas whose DC locators pick different DCs both find the roll due
// at once: both claim on the PDC emulator, so exactly one rolls, and AD
// (both DCs, once replicated) and the servers agree afterwards.
func TestTwoDCsOneRoll(t *testing.T) {
	e, dc1, dc2 := pairEnv(t, "pair")
	e.applied(t)
	asa := e.d.ASA + "$"
	before, _ := on(t, dc1, asa)
	converged(t, asa, before, dc1, dc2)
	time.Sleep(2500 * time.Millisecond) // due: older than Every
	rollers := []*deploy.Roller{
		{Deployment: e.deploymentAt(t, e.d.Servers, dc1, dc2), Every: 2 * time.Second, Jitter: time.Millisecond, Name: "replica-a"},
		{Deployment: e.deploymentAt(t, e.d.Servers, dc2, dc1), Every: 2 * time.Second, Jitter: time.Millisecond, Name: "replica-b"},
	}
	if a, b := rollers[0].Deployment.AD.URL(), rollers[1].Deployment.AD.URL(); !strings.Contains(a, "dc1.") || !strings.Contains(b, "dc2.") {
		t.Fatalf("the replicas are bound to %s and %s, not one DC each", a, b)
	}
	var wg sync.WaitGroup
	changes := make([]segkcd.Change, 2)
	errs := make([]error, 2)
	for i, r := range rollers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			changes[i], errs[i] = r.RollIfDue(ctxT(t))
		}()
	}
	wg.Wait()
	rolled := 0
	for i, r := range rollers {
		if errs[i] != nil {
			t.Fatalf("%s: %v", r.Name, errs[i])
		}
		if changes[i].Changed() {
			rolled++
		}
		if st := r.Status(); st.PDC != dc1.HostName {
			t.Errorf("%s wrote to %q, not the PDC emulator %s", r.Name, st.PDC, dc1.HostName)
		}
	}
	if rolled != 1 {
		t.Fatalf("%d replicas rolled: %v", rolled, changes)
	}
	// The other lost the swap on the PDC emulator, or found the claim (or,
	// slower, the fresh password) there.
	for _, ch := range changes {
		if !ch.Changed() {
			d := strings.Join(ch.Details, "; ")
			if !strings.Contains(d, "claimed the roll first") && !strings.Contains(d, "has been rolling it") && !strings.Contains(d, "password set") {
				t.Fatalf("the other replica: %s", ch)
			}
			t.Logf("the other replica: %s", d)
		}
	}
	note := converged(t, asa, before+1, dc1, dc2)
	if j, err := deploy.ParseJournal(note); err != nil || !j.Done {
		t.Fatalf("journal %q %v", note, err)
	}
	serversAgree(t, rollers[1].Deployment)
}

// A DC that has not replicated the roll yet issues tickets under the old
// key: the servers' Previous credential decrypts them, their Latest does
// not. Verify and Check show the lag, each DC's key version.
func TestTwoDCsLagIsCoveredByPrevious(t *testing.T) {
	e, dc1, dc2 := pairEnv(t, "lag")
	e.applied(t)
	asa := e.d.ASA + "$"
	before, _ := on(t, dc1, asa)
	converged(t, asa, before, dc1, dc2)
	ctx := ctxT(t)
	if err := dc2.InboundReplication(ctx, false); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := dc2.InboundReplication(context.Background(), true); err != nil {
			t.Error(err)
		}
	}()
	r := &deploy.Roller{Deployment: e.deploymentAt(t, e.d.Servers, dc2, dc1), Every: time.Nanosecond, Name: "gw-lag"}
	if ch, err := r.RollIfDue(ctx); err != nil || !ch.Changed() {
		t.Fatalf("roll: %v %v", ch, err)
	}
	if k, _ := on(t, dc2, asa); k != before {
		t.Fatalf("DC2 replicated (key version %d) with inbound replication off", k)
	}
	rep, err := e.d.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	views := map[string]int{}
	for _, v := range rep.DCs {
		if v.Err != nil {
			t.Fatalf("%s", v)
		}
		views[v.DC.DNSHostName] = v.KeyVersion
		t.Logf("%s", v)
	}
	if views[dc1.HostName] != before+1 || views[dc2.HostName] != before {
		t.Fatalf("Verify's views of the DCs %v: the lag does not show", views)
	}
	// DC2's KDC still issues tickets under the old key.
	at2, err := e.d.Kerberos.AtKDCs(dc2.KDCAddr())
	if err != nil {
		t.Fatal(err)
	}
	tkt, err := at2.ServiceTicket(ctx, asa)
	if err != nil {
		t.Fatal(err)
	}
	if tkt.Ticket.EncPart.KVNO != before {
		t.Fatalf("DC2's ticket is under key version %d, want the old %d", tkt.Ticket.EncPart.KVNO, before)
	}
	creds := e.hosts[0].Host.ASA("CAS1")
	if len(creds) < 2 {
		t.Fatalf("CAS1 holds %d credentials", len(creds))
	}
	opens := func(pw string) bool {
		kt, err := kerberos.KeytabFromPassword(kerberos.KeytabSpec{Realm: dc1.Realm, SAMAccountName: asa, DNSDomain: dc1.DNSDomain,
			Password: pw, ETypes: []int32{tkt.Ticket.EncPart.EType}})
		return err == nil && tkt.OpensWith(kt)
	}
	if opens(creds[0].Password) || !opens(creds[1].Password) {
		t.Fatalf("DC2's old-key ticket: Latest opens it %v, Previous %v; want false, true", opens(creds[0].Password), opens(creds[1].Password))
	}
	if err := dc2.InboundReplication(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := dc2.PullFrom(ctx, dc1); err != nil {
		t.Fatal(err)
	}
	converged(t, asa, before+1, dc1, dc2)
}

// With the PDC emulator (DC1) down, the roll waits and says so: it claims
// on no other DC. -check's reads work through DC2. Once DC2 has seized the
// role it still waits while DC1 is down (one DC of two is no majority);
// DC1, back, learns the seizure by replication, and the roll goes to DC2.
func TestTwoDCsRollWaitsForThePDC(t *testing.T) {
	e, dc1, dc2 := pairEnv(t, "pdc")
	e.applied(t)
	asa := e.d.ASA + "$"
	before, note := on(t, dc1, asa)
	converged(t, asa, before, dc1, dc2)
	ctx := ctxT(t)
	d := e.deploymentAt(t, e.d.Servers, dc1, dc2)
	if err := dc1.Kill(); err != nil {
		t.Fatal(err)
	}
	defer restarted(t, dc1)

	r := &deploy.Roller{Deployment: d, Every: time.Nanosecond, Name: "gw-wait"}
	_, err := r.RollIfDue(ctx)
	var ae *ad.Error
	if !errors.Is(err, ad.ErrPDCUnavailable) || !errors.As(err, &ae) || !strings.Contains(ae.Hint(), "seize") {
		t.Fatalf("with the PDC emulator down: %v", err)
	}
	if st := r.Status(); st.OK || st.PDC != dc1.HostName || !strings.Contains(st.Hint, "seize") {
		t.Fatalf("status: %+v", st)
	}
	if k, n := on(t, dc2, asa); k != before || n != note {
		t.Fatalf("the waiting roll wrote to DC2: key version %d, note %q", k, n)
	}
	// A fresh connection (as -check and provision make) fails over to DC2.
	fresh := e.deploymentAt(t, e.d.Servers, dc1, dc2)
	if !strings.Contains(fresh.AD.URL(), "dc2.") {
		t.Fatalf("bound to %s with DC1 dead", fresh.AD.URL())
	}
	rc, err := (&deploy.Roller{Deployment: fresh}).Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rc.DCs) != 2 || rc.DCs[0].Err == nil || rc.DCs[1].Err != nil || !rc.DCs[0].DC.PDC {
		t.Fatalf("Check's DCs with DC1 dead: %v", rc.DCs)
	}

	// Seized on DC2 with DC1 still down: DC2 alone is no majority of two,
	// and a DC1 that came back unreplicated would name itself. Still
	// waiting, and nothing written.
	if err := dc2.SeizePDC(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.RollIfDue(ctx); !errors.Is(err, ad.ErrPDCUnavailable) || !strings.Contains(err.Error(), "only 1 of the domain's 2 writable DCs") {
		t.Fatalf("seized, DC1 still down: %v", err)
	}
	if k, n := on(t, dc2, asa); k != before || n != note {
		t.Fatalf("the waiting roll wrote to DC2: key version %d, note %q", k, n)
	}
	// DC1 back learns the seizure by replication; then the roll goes to
	// DC2, the holder.
	restarted(t, dc1)
	pdcIs(t, dc2, dc1, dc2)
	ch, err := r.RollIfDue(ctx)
	if err != nil || !ch.Changed() {
		t.Fatalf("roll on the seized PDC emulator: %v %v", ch, err)
	}
	if st := r.Status(); st.PDC != dc2.HostName {
		t.Fatalf("rolled on %q, not %s", st.PDC, dc2.HostName)
	}
	if k, _ := on(t, dc2, asa); k != before+1 {
		t.Fatalf("DC2 key version %d after the roll, want %d", k, before+1)
	}
	serversAgree(t, fresh)
	converged(t, asa, before+1, dc1, dc2)
	// Give the role back for the other tests.
	if err := dc1.SeizePDC(ctx); err != nil {
		t.Fatal(err)
	}
	pdcIs(t, dc1, dc1, dc2)
}

// restarted starts dc again if it is not serving.
func restarted(t *testing.T, dc *lab.Lab) {
	t.Helper()
	if c, err := ad.Dial(ctxT(t), adAt(t, dc)); err == nil {
		c.Close()
		return
	}
	if err := dc.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// pdcIs waits until every DC names holder as the PDC emulator.
func pdcIs(t *testing.T, holder *lab.Lab, dcs ...*lab.Lab) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, dc := range dcs {
		for {
			c, err := ad.Dial(ctxT(t), adAt(t, dc))
			if err == nil {
				p, perr := c.PDCEmulator(ctxT(t))
				c.Close()
				if perr == nil && p.DNSHostName == holder.HostName {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s does not name %s the PDC emulator", dc.HostName, holder.HostName)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// The PDC emulator (DC1) dies at each boundary of a roll. The roll fails;
// while DC1 is down the next check waits and writes nothing to DC2; once
// DC1 is back and the claim's lease is over, the roll is finished with the
// password it started: one roll (the key version moves by one), the DCs
// converge, and the servers hold AD's password.
func TestTwoDCsRollWithThePDCDeadAtEachStep(t *testing.T) {
	e, dc1, dc2 := pairEnv(t, "steps")
	e.applied(t)
	asa := e.d.ASA + "$"
	isPush := func(s string) bool { return strings.Contains(s, "-AlternateServiceAccountCredential $cred") }
	for step, name := range []string{"after the claim", "after the push to CAS1", "after the push to CAS2", "after AD's reset and the check"} {
		t.Run(name, func(t *testing.T) {
			ctx := ctxT(t)
			before, _ := on(t, dc1, asa)
			converged(t, asa, before, dc1, dc2)
			d := e.deploymentAt(t, e.d.Servers, dc1, dc2)
			const lease = 3 * time.Second
			r := &deploy.Roller{Deployment: d, Every: time.Nanosecond, Lease: lease, Name: "gw-steps"}
			h := e.hosts[0].Host
			pushes, reads, killed := 0, 0, false
			h.AfterRun = func() {
				if killed {
					return
				}
				scripts := h.Scripts()
				s := scripts[len(scripts)-1]
				if isPush(s) {
					pushes++
				} else if pushes == 2 {
					reads++
				}
				switch step {
				case 0:
					killed = true // the first script comes after the claim
				case 1:
					killed = pushes == 1 && isPush(s)
				case 2:
					killed = pushes == 2 && isPush(s)
				case 3:
					// CAS2's credential is read back after the push, then
					// AD is reset, then the servers are read again.
					killed = reads == 2
				}
				if killed {
					if err := dc1.Kill(); err != nil {
						t.Error(err)
					}
				}
			}
			_, err := r.RollIfDue(ctx)
			h.AfterRun = nil
			defer restarted(t, dc1)
			// Before AD's reset the roll stops there; after it (and the
			// servers' check), at marking the journal done.
			want := "stopped at reset AD"
			if step == 3 {
				want = asa
			}
			if !killed || err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("killed %v, roll error %v; want one that %s", killed, err, want)
			}
			k2, n2 := on(t, dc2, asa)
			if _, err := r.RollIfDue(ctx); !errors.Is(err, ad.ErrPDCUnavailable) {
				t.Fatalf("with DC1 dead: %v", err)
			}
			if k, n := on(t, dc2, asa); k != k2 || n != n2 {
				t.Fatalf("the waiting roll wrote to DC2: key version %d -> %d, note %q -> %q", k2, k, n2, n)
			}
			restarted(t, dc1)
			time.Sleep(lease)
			ch, err := r.RollIfDue(ctx)
			if err != nil || !ch.Changed() {
				t.Fatalf("finishing the roll: %v %v", ch, err)
			}
			if step == 3 && !strings.Contains(ch.String(), "had reached every server and AD") {
				t.Fatalf("the roll had reached AD, yet: %s", ch)
			}
			note := converged(t, asa, before+1, dc1, dc2)
			if j, err := deploy.ParseJournal(note); err != nil || !j.Done {
				t.Fatalf("journal %q %v", note, err)
			}
			serversAgree(t, d)
		})
	}
}

// The premise of the PDC rule: a compare-and-swap of the note on one DC
// is no lock against one on another DC. Both swaps of the same old value
// succeed (replication is held off for the demonstration, as lag does for
// a second in real life), and replication then keeps one of them: the
// loser never learns it lost.
func TestTwoDCsSwapIsNoLockAcrossDCs(t *testing.T) {
	dc1, dc2 := twoDCs.Get(t)
	ctx := ctxT(t)
	c1, c2 := dialAt(t, dc1), dialAt(t, dc2)
	const user = "carol"
	old, err := c1.ReadNote(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	for _, dc := range []*lab.Lab{dc1, dc2} {
		if err := dc.InboundReplication(ctx, false); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := dc.InboundReplication(context.Background(), true); err != nil {
				t.Error(err)
			}
		}()
	}
	if _, err := c1.SwapNote(ctx, user, old, "claimed on dc1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.SwapNote(ctx, user, old, "claimed on dc2"); err != nil {
		t.Fatalf("the second claim, on the other DC: %v", err)
	}
	for _, dc := range []*lab.Lab{dc1, dc2} {
		if err := dc.InboundReplication(ctx, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := dc1.PullFrom(ctx, dc2); err != nil {
		t.Fatal(err)
	}
	if err := dc2.PullFrom(ctx, dc1); err != nil {
		t.Fatal(err)
	}
	n1, _ := c1.ReadNote(ctx, user)
	n2, _ := c2.ReadNote(ctx, user)
	if n1 != n2 || (n1 != "claimed on dc1" && n1 != "claimed on dc2") {
		t.Fatalf("after replication: %q on DC1, %q on DC2", n1, n2)
	}
	t.Logf("both claims succeeded; replication kept %q", n1)
	if _, err := c1.SwapNote(ctx, user, n1, old); err != nil {
		t.Fatal(err)
	}
}

// A role seized while its holder was down, which then comes back before it
// has replicated: each DC names itself. DialPDC, asked through either DC,
// says they disagree and the roll waits, rather than let one replica claim
// on DC1 and another on DC2. Replication settles it.
func TestTwoDCsDisagreeOnThePDC(t *testing.T) {
	e, dc1, dc2 := pairEnv(t, "split")
	e.applied(t)
	ctx := ctxT(t)
	if err := dc1.InboundReplication(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := dc1.Kill(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		restarted(t, dc1)
		if err := dc1.InboundReplication(context.Background(), true); err != nil {
			t.Error(err)
		}
		if err := dc1.SeizePDC(context.Background()); err != nil {
			t.Error(err)
		}
		pdcIs(t, dc1, dc1, dc2)
	}()
	if err := dc2.SeizePDC(ctx); err != nil {
		t.Fatal(err)
	}
	restarted(t, dc1)
	// Replicas that each reach only one DC (an address and that DC's
	// name, no DNS for the other): each DC names itself, and each replica
	// alone would find a holder. Neither rolls: one DC of two is no
	// majority.
	asa := e.d.ASA + "$"
	k1, _ := on(t, dc1, asa)
	k2, _ := on(t, dc2, asa)
	for _, dc := range []*lab.Lab{dc1, dc2} {
		r := &deploy.Roller{Deployment: e.pinnedTo(t, dc), Every: time.Nanosecond, Name: "gw-only-" + dc.HostName}
		if _, err := r.RollIfDue(ctx); !errors.Is(err, ad.ErrPDCUnavailable) || !strings.Contains(err.Error(), "only 1 of the domain's 2 writable DCs") {
			t.Fatalf("a replica that reaches only %s: %v", dc.HostName, err)
		}
	}
	if a, b := mustOn(t, dc1, asa), mustOn(t, dc2, asa); a != k1 || b != k2 {
		t.Fatalf("a replica rolled: key versions %d, %d -> %d, %d", k1, k2, a, b)
	}
	for _, order := range [][]*lab.Lab{{dc1, dc2}, {dc2, dc1}} {
		c := dialAt(t, order...)
		_, _, err := c.DialPDC(ctx)
		if !errors.Is(err, ad.ErrPDCUnavailable) || !strings.Contains(err.Error(), "disagree") {
			t.Fatalf("through %s: %v", c.URL(), err)
		}
		r := &deploy.Roller{Deployment: e.deploymentAt(t, e.d.Servers, order...), Every: time.Nanosecond, Name: "gw-split"}
		if _, err := r.RollIfDue(ctx); !errors.Is(err, ad.ErrPDCUnavailable) {
			t.Fatalf("a roll through %s: %v", c.URL(), err)
		}
	}
	if err := dc1.InboundReplication(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := dc1.PullFrom(ctx, dc2); err != nil {
		t.Fatal(err)
	}
	pdcIs(t, dc2, dc1, dc2)
	c := dialAt(t, dc1, dc2)
	p, dc, err := c.DialPDC(ctx)
	if err != nil || dc.DNSHostName != dc2.HostName {
		t.Fatalf("after replication: %v %v", dc, err)
	}
	p.Close()
}

func mustOn(t *testing.T, dc *lab.Lab, asa string) int {
	k, _ := on(t, dc, asa)
	return k
}

// pinnedTo is e's deployment as a replica that reaches one DC only: its
// address, its name in TLS, and a Kerberos client of its KDC alone.
func (e *env) pinnedTo(t *testing.T, dc *lab.Lab) *deploy.Deployment {
	t.Helper()
	tc, err := dc.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	c, err := ad.Dial(ctxT(t), ad.Config{URL: dc.LDAPSURL(), TLSConfig: tc, DialTimeout: 3 * time.Second,
		Bind: ad.SimpleBind{Username: dc.AdminBindName(), Password: dc.AdminPassword}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	d := e.deploymentAt(t, e.d.Servers, dc)
	d.AD.Close()
	d.AD = c
	return d
}

// A connection stays on its DC. Reached through an address that moves to
// another DC (a balancer; here a TCP relay, and a name both DCs'
// certificates carry), it refuses to go on there after a break rather than
// read on one DC and write on the other. And DialDC takes a DC only under
// its own name in TLS: DC2's address, asked for DC1, fails in the
// handshake, before any bind.
func TestTwoDCsConnStaysOnItsDC(t *testing.T) {
	dc1, dc2 := twoDCs.Get(t)
	ctx := ctxT(t)
	relay := tcprelay.New(t, net.JoinHostPort(dc1.IP, "636"))
	tc, err := dc1.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg := ad.Config{URL: "ldaps://" + relay.Addr(), TLSConfig: &tls.Config{RootCAs: tc.RootCAs, ServerName: dc1.DNSDomain},
		DialTimeout: 3 * time.Second, Bind: ad.SimpleBind{Username: dc1.AdminBindName(), Password: dc1.AdminPassword}}
	c, err := ad.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ReadNote(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	relay.SwitchTo(net.JoinHostPort(dc2.IP, "636"))
	// The call that finds the connection cut may fail with the cut
	// itself; the next dials again, and must not go on on DC2.
	for i := 0; ; i++ {
		_, err = c.ReadNote(ctx, "carol")
		if err != nil && strings.Contains(err.Error(), "now reaches another DC") {
			break
		}
		if err == nil || i == 2 {
			t.Fatalf("after the relay moved to DC2, call %d: %v", i+1, err)
		}
	}
	// DialDC: asked for DC1 through DC2's address, the handshake fails.
	c2 := dialAt(t, dc2)
	dcs, err := c2.DomainControllers(ctx)
	if err != nil || len(dcs) != 2 {
		t.Fatalf("DCs: %v %v", dcs, err)
	}
	only2, err := ad.Dial(ctx, ad.Config{URL: dc2.LDAPSURL(), TLSConfig: &tls.Config{RootCAs: tc.RootCAs, ServerName: dc2.HostName},
		DialTimeout: 3 * time.Second, Bind: ad.SimpleBind{Username: dc1.AdminBindName(), Password: dc1.AdminPassword}})
	if err != nil {
		t.Fatal(err)
	}
	defer only2.Close()
	_, err = only2.DialDC(ctx, dcs[0])
	var de *ad.DialError
	if dcs[0].DNSHostName != dc1.HostName || !errors.As(err, &de) || !strings.Contains(de.Tried[0].Err.Error(), "certificate") {
		t.Fatalf("DialDC(%s) through DC2's address: %v", dcs[0].DNSHostName, err)
	}
}
