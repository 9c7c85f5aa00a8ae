package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/segkcd/segkcd"
	"github.com/segkcd/segkcd/deploy"
	"github.com/segkcd/segkcd/exchange"
	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/winrs"
)

// replica is the deployment as another process of the backend sees it:
// its own AD connection, Kerberos client and WinRM clients.
func (e *env) replica(t *testing.T) *deploy.Deployment {
	t.Helper()
	c, err := e.l.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	kcfg, err := kerberos.LoadConfig(e.l.Krb5Conf)
	if err != nil {
		t.Fatal(err)
	}
	d := *e.d
	d.AD, d.Kerberos, d.Progress = c, kerberos.NewWithPassword(e.l.AdminUser, e.l.Realm, e.l.AdminPassword, kcfg), nil
	d.Servers = append([]deploy.Server(nil), e.d.Servers...)
	for i, h := range e.hosts {
		sh, err := winrs.New(h.ClientConfig())
		if err != nil {
			t.Fatal(err)
		}
		d.Servers[i].Shell = sh
	}
	return &d
}

// claim writes a claim of owner, made at claimed, into the ASA's note
// (which holds the done journal of Apply's roll), as a replica that then
// died would leave it.
func claim(t *testing.T, d *deploy.Deployment, owner string, claimed time.Time) {
	t.Helper()
	cur, err := d.AD.ReadNote(ctxT(t), d.ASA+"$")
	if err != nil {
		t.Fatal(err)
	}
	if j, err := deploy.ParseJournal(cur); err != nil || (cur != "" && !j.Done) {
		t.Fatalf("the note before the claim: %q %v", cur, err)
	}
	b, _ := json.Marshal(deploy.Journal{Kind: "asa-roll", Owner: owner, Claimed: claimed})
	if _, err := d.AD.SwapNote(ctxT(t), d.ASA+"$", cur, string(b)); err != nil {
		t.Fatal(err)
	}
}

func (e *env) applied(t *testing.T) {
	t.Helper()
	if _, err := e.d.Apply(ctxT(t), mustPlan(t, e.d)); err != nil {
		t.Fatal(err)
	}
}

func kvno(t *testing.T, d *deploy.Deployment) int {
	a, err := d.AD.FindAccount(ctxT(t), d.ASA+"$")
	if err != nil {
		t.Fatal(err)
	}
	return a.KeyVersion
}

// Two replicas check at once when the password is due: exactly one rolls
// (AD's key version moves by one), the other leaves it; right after, it
// is not due for either; the chain still verifies.
func TestRollerTwoReplicas(t *testing.T) {
	e := newEnv(t, "rol")
	e.applied(t)
	before := kvno(t, e.d)
	time.Sleep(2500 * time.Millisecond) // the password is now older than Every
	rollers := []*deploy.Roller{
		{Deployment: e.replica(t), Every: 2 * time.Second, Jitter: time.Millisecond, Name: "replica-a"},
		{Deployment: e.replica(t), Every: 2 * time.Second, Jitter: time.Millisecond, Name: "replica-b"},
	}
	var wg sync.WaitGroup
	changes := make([]segkcd.Change, 2)
	errs := make([]error, 2)
	start := make(chan struct{})
	for i, r := range rollers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			changes[i], errs[i] = r.RollIfDue(ctxT(t))
		}()
	}
	// An admin API reads the state while the checks run (-race).
	stop := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for {
			select {
			case <-stop:
				return
			default:
				for _, r := range rollers {
					_ = r.Status()
				}
				time.Sleep(time.Millisecond)
			}
		}
	}()
	close(start)
	wg.Wait()
	close(stop)
	<-polled
	rolled := 0
	for i := range rollers {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		if changes[i].Changed() {
			rolled++
		}
	}
	if rolled != 1 || kvno(t, e.d) != before+1 {
		t.Fatalf("%d replicas rolled, kvno %d -> %d: %v", rolled, before, kvno(t, e.d), changes)
	}
	// Both replicas saw the roll: the one that made it counts it, and the
	// other's next check reads the new password's time from AD.
	for i, r := range rollers {
		st := r.Status()
		if !st.OK || st.Rolls != btoi(changes[i].Changed()) || st.ASA != "ASAROL$" || st.Replica != r.Name ||
			st.LastCheck.IsZero() || st.LastError != "" {
			t.Errorf("status of %s: %+v", r.Name, st)
		}
	}
	for _, r := range rollers {
		r.Every = time.Hour
		if ch, err := r.RollIfDue(ctxT(t)); err != nil || ch.Changed() {
			t.Fatalf("just rolled, yet: %v %v", ch, err)
		}
		st := r.Status()
		if age := time.Since(st.LastRoll); age < 0 || age > time.Minute || !st.NextRoll.Equal(st.LastRoll.Add(time.Hour)) ||
			!strings.Contains(st.Result, "due after 1h0m0s") {
			t.Errorf("after the roll, %s says %+v", r.Name, st)
		}
	}
	// Check reads the same, and changes nothing.
	kv := kvno(t, e.d)
	rc, err := rollers[0].Check(ctxT(t))
	if err != nil || !rc.Journal.Done || len(rc.Servers) != 2 || !rc.Servers[0].LatestIsCurrent || !rc.Servers[1].LatestIsCurrent ||
		!rc.Due.Equal(rc.PasswordSet.Add(time.Hour)) || time.Since(rc.PasswordSet) > time.Minute || kvno(t, e.d) != kv {
		t.Fatalf("Check: %+v %v", rc, err)
	}
	if _, err := e.d.Verify(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

// A replica died mid-roll: it had claimed the roll and pushed a new
// password to CAS1 only. While its claim is fresh, others leave it; once
// the claim is older than Lease, another replica takes over and finishes
// with the same password (CAS1's credential is kept, not replaced).
func TestRollerTakesOverACrashedRoll(t *testing.T) {
	e := newEnv(t, "crash")
	e.applied(t)
	ctx := ctxT(t)
	d := e.replica(t)
	asa := d.ASA + "$"
	const half = "Half-Rolled-Passw0rd-0123456789-abcdefghij!"
	if _, err := (&exchange.Org{Shell: d.Servers[0].Shell}).SetASA(ctx, "CAS1", e.l.Domain+`\`+asa, half); err != nil {
		t.Fatal(err)
	}
	claim(t, d, "crashed", time.Now())
	r := &deploy.Roller{Deployment: d, Every: time.Hour, Lease: 2 * time.Second, Name: "survivor"}
	if ch, err := r.RollIfDue(ctx); err != nil || ch.Changed() {
		t.Fatalf("took over a fresh claim: %v %v", ch, err)
	}
	if st := r.Status(); st.RollingBy != "crashed" || !st.OK {
		t.Fatalf("status while the claim is fresh: %+v", st)
	}
	time.Sleep(2500 * time.Millisecond)
	ch, err := r.RollIfDue(ctx)
	if err != nil || !ch.Changed() {
		t.Fatalf("takeover: %v %v", ch, err)
	}
	for _, s := range []string{"CAS1", "CAS2"} {
		if c := e.hosts[0].Host.ASA(s); len(c) == 0 || c[0].Password != half {
			t.Fatalf("%s does not hold the crashed roll's password as Latest", s)
		}
	}
	note, err := d.AD.ReadNote(ctx, asa)
	if err != nil {
		t.Fatal(err)
	}
	var j deploy.Journal
	if err := json.Unmarshal([]byte(note), &j); err != nil || !j.Done || j.Owner != "survivor" || !j.Roll.ADReset {
		t.Fatalf("journal %+v %v", j, err)
	}
	if _, err := d.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	// A note that is not ours is left alone.
	if _, err := d.AD.SwapNote(ctx, asa, note, "Do not touch: ticket #4711"); err != nil {
		t.Fatal(err)
	}
	r.Every = time.Nanosecond
	if _, err := r.RollIfDue(ctx); !errors.Is(err, deploy.ErrForeignNote) {
		t.Fatalf("foreign note: %v", err)
	}
	// The failure shows in the status, with its hint, and in the metrics;
	// the password's time is read before the note, so the next roll is due
	// (Every is a nanosecond now) and held off by the foreign note.
	st := r.Status()
	if st.OK || st.Failures != 1 || st.Rolls != 1 || !strings.Contains(st.LastError, "not a roll journal") ||
		!strings.Contains(st.Hint, "info attribute") || st.RollingBy != "" || st.HeldSince.IsZero() || !strings.Contains(st.Blocked, "not a roll journal") {
		t.Fatalf("status after a failed check: %+v", st)
	}
	reg := prometheus.NewRegistry()
	if err := r.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if l := m.GetLabel(); len(l) != 1 || l[0].GetValue() != asa {
				t.Errorf("%s labels %v", mf.GetName(), l)
			}
			got[mf.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	if got["segkcd_asa_rolls_total"] != 1 || got["segkcd_asa_roll_failures_total"] != 1 || got["segkcd_asa_roll_last_check_ok"] != 0 ||
		math.Abs(got["segkcd_asa_roll_next_roll_timestamp_seconds"]-got["segkcd_asa_roll_last_roll_timestamp_seconds"]) > 1 ||
		got["segkcd_asa_roll_held_since_timestamp_seconds"] == 0 ||
		time.Since(time.Unix(int64(got["segkcd_asa_roll_last_error_timestamp_seconds"]), 0)) > time.Minute {
		t.Fatalf("metrics %v", got)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// A replica died after its roll reached every server and AD, before it
// marked the journal done: the survivor records it as done after the
// lease, and does not roll again.
func TestRollerTakesOverARollThatReachedAD(t *testing.T) {
	e := newEnv(t, "reach")
	e.applied(t)
	ctx := ctxT(t)
	d := e.replica(t)
	asa := d.ASA + "$"
	claim(t, d, "died-late", time.Now())
	time.Sleep(1100 * time.Millisecond) // pwdLastSet has a clock of its own: after the claim, clearly
	roll := exchange.Roll{Servers: []string{"CAS1", "CAS2"}, User: e.l.Domain + `\` + asa, AD: d.AD, Kerberos: d.Kerberos}
	if _, err := (&exchange.Org{Shell: d.Servers[0].Shell}).RollASAPassword(ctx, roll); err != nil {
		t.Fatal(err)
	}
	rolled := kvno(t, d)
	latest := e.hosts[0].Host.ASA("CAS1")[0].Password
	r := &deploy.Roller{Deployment: d, Every: time.Hour, Lease: 2 * time.Second, Name: "survivor"}
	time.Sleep(2500 * time.Millisecond)
	ch, err := r.RollIfDue(ctx)
	if err != nil || !ch.Changed() || !strings.Contains(ch.String(), "had reached every server and AD") {
		t.Fatalf("takeover: %v %v", ch, err)
	}
	if kvno(t, d) != rolled || e.hosts[0].Host.ASA("CAS1")[0].Password != latest {
		t.Fatal("the takeover rolled again")
	}
	note, _ := d.AD.ReadNote(ctx, asa)
	if j, err := deploy.ParseJournal(note); err != nil || !j.Done || j.Owner != "survivor" {
		t.Fatalf("journal %q %v", note, err)
	}
	if st := r.Status(); st.Rolls != 1 || !st.OK {
		t.Fatalf("status %+v", st)
	}
}

// A claim dated in the future (someone who may write the note, or a
// clock far off) does not hold off the roll: it is taken over at once.
func TestRollerClaimFromTheFuture(t *testing.T) {
	e := newEnv(t, "future")
	e.applied(t)
	ctx := ctxT(t)
	d := e.replica(t)
	before := kvno(t, d)
	claim(t, d, "squatter", time.Now().Add(24*time.Hour))
	r := &deploy.Roller{Deployment: d, Every: time.Hour, Name: "gw-1"}
	ch, err := r.RollIfDue(ctx)
	if err != nil || !ch.Changed() || kvno(t, d) != before+1 {
		t.Fatalf("a claim from tomorrow held the roll off: %v %v", ch, err)
	}
}

// With Replicas, a claim by a name that is not one of them holds off no
// roll (issue 27: anyone who may write the note could hold off every roll
// with claims dated now).
func TestRollerReplicasOverrideStranger(t *testing.T) {
	e := newEnv(t, "stranger")
	e.applied(t)
	d := e.replica(t)
	before := kvno(t, d)
	claim(t, d, "squatter", time.Now())
	r := &deploy.Roller{Deployment: d, Every: time.Nanosecond, Name: "gw-1", Replicas: []string{"gw-1", "gw-2"}}
	ch, err := r.RollIfDue(ctxT(t))
	if err != nil || !ch.Changed() || kvno(t, d) != before+1 {
		t.Fatalf("a stranger's claim held the roll off: %v %v", ch, err)
	}
	// A claim under the replica's own name, made before it started, is its
	// dead run's: taken over at once, within the lease. One made since is
	// another process's under the same name: honoured.
	own := func(at time.Time) {
		cur, err := d.AD.ReadNote(ctxT(t), d.ASA+"$")
		if err != nil {
			t.Fatal(err)
		}
		mine, _ := json.Marshal(deploy.Journal{Kind: "asa-roll", Owner: "gw-1", Claimed: at})
		if _, err := d.AD.SwapNote(ctxT(t), d.ASA+"$", cur, string(mine)); err != nil {
			t.Fatal(err)
		}
	}
	// (Dated after the last roll, so that the takeover has a roll to make.)
	own(time.Now())
	time.Sleep(20 * time.Millisecond)
	fresh := &deploy.Roller{Deployment: d, Every: time.Nanosecond, Lease: time.Hour, Name: "gw-1", Replicas: []string{"gw-1", "gw-2"}}
	if ch, err := fresh.RollIfDue(ctxT(t)); err != nil || !ch.Changed() || kvno(t, d) != before+2 {
		t.Fatalf("its dead run's claim held the roll off: %v %v", ch, err)
	}
	own(time.Now())
	if ch, err := fresh.RollIfDue(ctxT(t)); err != nil || ch.Changed() || kvno(t, d) != before+2 {
		t.Fatalf("a live claim under the same name was taken over: %v %v", ch, err)
	}
}

// A due roll held off by claims that keep being rewritten, even under a
// replica's name, is reported from when it was first seen held
// (RollStatus.HeldSince, segkcd_asa_roll_held_since_timestamp_seconds), so
// that an operator's alert fires after two leases; a roll that happens
// clears it.
func TestRollerHeldOffIsReported(t *testing.T) {
	e := newEnv(t, "heldoff")
	e.applied(t)
	d := e.replica(t)
	ctx := ctxT(t)
	first := time.Now()
	claim(t, d, "gw-2", first)
	r := &deploy.Roller{Deployment: d, Every: time.Nanosecond, Name: "gw-1", Replicas: []string{"gw-1", "gw-2"}}
	if ch, err := r.RollIfDue(ctx); err != nil || ch.Changed() {
		t.Fatalf("a replica's fresh claim: %v %v", ch, err)
	}
	st := r.Status()
	if st.HeldSince.IsZero() || !strings.Contains(st.Blocked, "gw-2") {
		t.Fatalf("not reported held: %+v", st)
	}
	since := st.HeldSince
	// The squatter rewrites its claim, dated now again.
	old, _ := d.AD.ReadNote(ctx, d.ASA+"$")
	b, _ := json.Marshal(deploy.Journal{Kind: "asa-roll", Owner: "gw-2", Claimed: time.Now()})
	if _, err := d.AD.SwapNote(ctx, d.ASA+"$", old, string(b)); err != nil {
		t.Fatal(err)
	}
	r.RollIfDue(ctx)
	if st := r.Status(); !st.HeldSince.Equal(since) {
		t.Errorf("a rewritten claim restarted the count: %v, was %v", st.HeldSince, since)
	}
	reg := prometheus.NewRegistry()
	if err := r.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	mfs, _ := reg.Gather()
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "segkcd_asa_roll_held_since_timestamp_seconds" {
			found = math.Abs(mf.GetMetric()[0].GetGauge().GetValue()-float64(since.UnixNano())/1e9) < 1
		}
	}
	if !found {
		t.Error("segkcd_asa_roll_held_since_timestamp_seconds missing or wrong")
	}
	// The claim ends (the note cleared): the roll happens, and nothing is
	// held any more.
	cur, _ := d.AD.ReadNote(ctx, d.ASA+"$")
	if _, err := d.AD.SwapNote(ctx, d.ASA+"$", cur, ""); err != nil {
		t.Fatal(err)
	}
	if ch, err := r.RollIfDue(ctx); err != nil || !ch.Changed() {
		t.Fatalf("after the claim ended: %v %v", ch, err)
	}
	if st := r.Status(); !st.HeldSince.IsZero() || st.Blocked != "" {
		t.Errorf("still reported held after the roll: %+v", st)
	}
}

// FuzzParseJournal feeds arbitrary notes to ParseJournal (anyone who may
// write the ASA's Notes chooses them): a Journal or ErrForeignNote, never
// a panic. Seed corpus: testdata/fuzz/FuzzParseJournal.
func FuzzParseJournal(f *testing.F) {
	f.Add(`{"segkcd":"asa-roll","owner":"a","claimed":"2026-11-25T10:00:00Z"}`)
	f.Add(`{"segkcd":"other"}`)
	f.Add("")
	f.Fuzz(func(t *testing.T, note string) {
		j, err := deploy.ParseJournal(note)
		if err != nil && !errors.Is(err, deploy.ErrForeignNote) {
			t.Fatalf("error outside ErrForeignNote: %v", err)
		}
		if err == nil && note != "" && j.Kind != "asa-roll" {
			t.Fatalf("accepted %q", note)
		}
	})
}
