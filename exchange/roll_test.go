package exchange_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/config"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/exchange"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/winrs"
	"github.com/segkcd/segkcd/winrs/winrstest"
)

// rollEnv is the lab AD with the KCD setup and an Exchange organisation
// (CAS1 2019, CAS2 2016, CAS3 2013) on the WS-Man test host.
type rollEnv struct {
	l    *lab.Lab
	ad   *ad.Conn
	krb  *kerberos.Client
	spn  string
	roll exchange.Roll
	ts   *winrstest.Server
}

const rollSvcPW = "Roll-Svc-Passw0rd!"

func newRollEnv(t *testing.T) *rollEnv {
	t.Helper()
	l := theLab.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spn := "http/mail-exch." + l.DNSDomain
	if err := l.ProvisionKCD(ctx, lab.KCD{ASA: "EXCHROLLASA", Service: "svc_exch", Password: rollSvcPW, SPNs: []string{spn}}); err != nil {
		t.Fatal(err)
	}
	c, err := l.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	kcfg, err := kerberos.LoadConfig(l.Krb5Conf)
	if err != nil {
		t.Fatal(err)
	}
	krb := kerberos.NewWithPassword("svc_exch", l.Realm, rollSvcPW, kcfg)
	_, ts := org(t)
	e := &rollEnv{l: l, ad: c, krb: krb, spn: spn, ts: ts,
		roll: exchange.Roll{Servers: []string{"CAS1", "CAS2", "CAS3"}, User: l.Domain + `\EXCHROLLASA$`, AD: c, Kerberos: krb, KeytabRealm: l.Realm}}
	return e
}

// newOrg is a fresh management connection, as a new process would open.
func (e *rollEnv) newOrg(t *testing.T) *exchange.Org {
	sh, err := winrs.New(e.ts.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	return &exchange.Org{Shell: sh}
}

// proveAll shows with a real S4U ticket from the lab KDC and the Acceptor
// that every server decrypts: one of the passwords it stores (Latest or
// Previous) opens a ticket issued now.
func (e *rollEnv) proveAll(t *testing.T, when string) {
	t.Helper()
	ctx := context.Background()
	tk, err := kerberos.NewWithPassword("svc_exch", e.l.Realm, rollSvcPW, mustConfig(t, e.l)).Impersonate(ctx, "alice", e.spn)
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	acct, err := e.ad.FindAccount(ctx, "EXCHROLLASA$")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range e.roll.Servers {
		ok := false
		for _, cred := range e.ts.Host.ASA(s) {
			kt, err := kerberos.KeytabFromPassword(kerberos.KeytabSpec{Realm: e.l.Realm, SAMAccountName: "EXCHROLLASA$",
				DNSDomain: e.l.DNSDomain, Principals: []string{e.spn}, Password: cred.Password, KVNO: uint32(acct.KeyVersion)})
			if err != nil {
				t.Fatal(err)
			}
			h, _ := kerberos.NegotiateHeader(tk)
			if id, err := (&kerberos.Acceptor{Keytab: kt}).Accept(h); err == nil && id.User == "alice" {
				ok = true
			}
		}
		if !ok {
			t.Fatalf("%s: %s cannot decrypt a ticket issued now (holds %d credentials)", when, s, len(e.ts.Host.ASA(s)))
		}
	}
}

func mustConfig(t *testing.T, l *lab.Lab) *config.Config {
	cfg, err := kerberos.LoadConfig(l.Krb5Conf)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// rolledEverywhere checks that every server's Latest is one password.
func (e *rollEnv) rolledEverywhere(t *testing.T, when string) string {
	t.Helper()
	first := ""
	for _, s := range e.roll.Servers {
		got := e.ts.Host.ASA(s)
		if len(got) == 0 {
			t.Fatalf("%s: %s holds nothing", when, s)
		}
		if first == "" {
			first = got[0].Password
		} else if got[0].Password != first {
			t.Fatalf("%s: %s holds another password as Latest", when, s)
		}
	}
	return first
}

// The roll end to end, then a kill at every script boundary of a roll,
// each recovered by Resume, by ResumeJournal in a new process, or by a new
// roll; after each kill and each recovery every server decrypts tickets
// issued now, and the roll's error says so truthfully.
func TestRollSurvivesAKillAtEveryStep(t *testing.T) {
	e := newRollEnv(t)
	ctx := context.Background()
	o := e.newOrg(t)
	res, err := o.RollASAPassword(ctx, e.roll)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Journal.Done || !res.Journal.ADReset || len(res.Status) != 3 || res.Keytab == nil {
		t.Fatalf("result: %+v", res)
	}
	for _, k := range res.Keytab.Entries {
		if k.Key.KeyType == 23 {
			t.Fatal("an RC4 key in the keytab of an AES-only ASA")
		}
	}
	e.rolledEverywhere(t, "first roll")
	e.proveAll(t, "first roll")
	if s := fmt.Sprintf("%v %+v %#v", res, res, res); strings.Contains(s, e.ts.Host.ASA("CAS1")[0].Password) {
		t.Fatal("the roll result prints its password")
	}
	// No password on any process command line (what Windows auditing records).
	for _, line := range e.ts.CommandLines() {
		for _, s := range e.roll.Servers {
			for _, c := range e.ts.Host.ASA(s) {
				if strings.Contains(line, c.Password) {
					t.Fatal("an ASA password on a command line")
				}
			}
		}
	}
	// How many scripts does a whole roll run?
	before := len(e.ts.Host.Scripts())
	if _, err := o.RollASAPassword(ctx, e.roll); err != nil {
		t.Fatal(err)
	}
	total := len(e.ts.Host.Scripts()) - before
	e.proveAll(t, "second roll")

	var mu sync.Mutex
	var kill func()
	n := 0
	e.ts.Host.AfterRun = func() {
		mu.Lock()
		defer mu.Unlock()
		n--
		if n == 0 && kill != nil {
			kill()
		}
	}
	for at := 1; at <= total; at++ {
		when := fmt.Sprintf("killed after script %d of %d", at, total)
		kctx, cancel := context.WithCancel(ctx)
		mu.Lock()
		n, kill = at, cancel
		mu.Unlock()
		res, err := e.newOrg(t).RollASAPassword(kctx, e.roll)
		cancel()
		mu.Lock()
		kill = nil
		mu.Unlock()
		if err == nil {
			continue // the kill came after the last step that matters
		}
		var re *exchange.RollError
		if !errors.As(err, &re) || !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: %v", when, err)
		}
		for _, st := range re.State {
			if st.Err == nil && !st.Decrypts() {
				t.Fatalf("%s: the error says %s", when, st)
			}
		}
		e.proveAll(t, when)
		switch at % 3 {
		case 0:
			err = e.newOrg(t).Resume(ctx, res)
		case 1:
			_, err = e.newOrg(t).ResumeJournal(ctx, res.Journal, exchange.Roll{AD: e.ad, Kerberos: e.krb, Servers: e.roll.Servers})
		case 2:
			_, err = e.newOrg(t).RollASAPassword(ctx, e.roll)
		}
		if err != nil {
			t.Fatalf("%s, recovery: %v", when, err)
		}
		e.rolledEverywhere(t, when+", recovered")
		e.proveAll(t, when+", recovered")
	}
}

// The failures of issue 8, each reproduced: two rolls failing at the copy;
// a roll killed after the first server, then one failing at the copy. No
// server ever loses AD's key, and CheckASA tells a mid-roll server apart.
func TestRollRepeatedFailures(t *testing.T) {
	e := newRollEnv(t)
	ctx := context.Background()
	if _, err := e.newOrg(t).RollASAPassword(ctx, e.roll); err != nil {
		t.Fatal(err)
	}
	fail := errors.New("Set-ClientAccessServer: Active Directory operation failed on dc1")
	for i := 0; i < 2; i++ {
		e.ts.Host.FailOn("set-clientaccessserver", fail) // CAS3 (2013) breaks
		_, err := e.newOrg(t).RollASAPassword(ctx, e.roll)
		var re *exchange.RollError
		if !errors.As(err, &re) || !strings.Contains(re.Step, "CAS3") {
			t.Fatalf("roll %d: %v", i, err)
		}
		e.proveAll(t, fmt.Sprintf("roll %d failed at CAS3", i))
		st, err := e.newOrg(t).CheckASA(ctx, e.roll)
		if err != nil {
			t.Fatal(err)
		}
		if !st[0].PreviousIsCurrent || st[0].LatestIsCurrent || !st[2].LatestIsCurrent {
			t.Fatalf("check after a half roll: %v", st)
		}
	}
	if _, err := e.newOrg(t).RollASAPassword(ctx, e.roll); err != nil {
		t.Fatal(err)
	}
	e.rolledEverywhere(t, "after two failed rolls")
	e.proveAll(t, "after two failed rolls")
	st, err := e.newOrg(t).CheckASA(ctx, e.roll)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if !s.LatestIsCurrent {
			t.Fatalf("after the roll: %v", st)
		}
	}
}
