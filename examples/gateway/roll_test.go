package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/deploy"
	"github.com/segkcd/segkcd/examples/internal/siteconfig"
	"github.com/segkcd/segkcd/exchange"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/winrs"
	"github.com/segkcd/segkcd/winrs/winrstest"
)

// TestGatewayRoll: two replicas of the program with the same roll
// section (one binding to AD with a password and to WinRM with NTLM, the
// other with a keytab for both: GSSAPI to AD, Kerberos to WinRM)
// against the lab's AD and a WS-Man test host (a model of Windows with an
// Exchange organisation, not a real Exchange). Each time the ASA's password
// comes due, exactly one replica claims the roll, and the test kills it
// (SIGKILL) at a step boundary of the roll: once CAS1 holds the new
// password, once CAS2 holds it too, once AD holds it but the journal is
// not done. Each time the other replica reports the open claim, takes it
// over after the lease and finishes with the password the dead one
// started (or, when it had reached AD, records it as done); the dead one
// is started again for the next round. /v1/roll and /metrics say so, and
// devices are served throughout.
func TestGatewayRoll(t *testing.T) {
	f := newFixture(t)
	l := f.lab
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	// The site as provision leaves it: an ASA whose password CAS1 and
	// CAS2 hold, on the test host that runs the Exchange cmdlets.
	h := winrstest.NewHost("cas1")
	h.AddExchangeServer("CAS1", winrstest.Exchange2019)
	h.AddExchangeServer("CAS2", winrstest.Exchange2016)
	// While hit is set, the host kills the replica that claimed the roll
	// as soon as hit says the roll has reached its step: the host calls
	// AfterRun before it answers the script, so the replica dies there.
	var mu sync.Mutex
	var hit func() bool
	var killed string
	procs := map[string]*process{}
	var conn *ad.Conn
	h.AfterRun = func() {
		mu.Lock()
		defer mu.Unlock()
		if hit == nil || !hit() {
			return
		}
		hit = nil
		note, err := conn.ReadNote(context.Background(), "GWRASA$")
		j, jerr := deploy.ParseJournal(note)
		pr := procs[j.Owner]
		if err != nil || jerr != nil || pr == nil || j.Done {
			t.Errorf("the roll reached its step, yet the note names no replica rolling: %q %v %v", note, err, jerr)
			killed = "?"
			return
		}
		killed = j.Owner
		pr.cmd.Process.Signal(syscall.SIGKILL)
		err = <-pr.done // the reader has seen it exit
		pr.done <- err
	}
	ts := winrstest.StartTest(t, h)
	sh, err := winrs.New(ts.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	conn, err = l.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	kcfg, err := kerberos.LoadConfig(l.Krb5Conf)
	if err != nil {
		t.Fatal(err)
	}
	d := &deploy.Deployment{AD: conn, Kerberos: kerberos.NewWithPassword(l.AdminUser, l.Realm, l.AdminPassword, kcfg),
		ASA: "GWRASA", MailHosts: []string{"mail-gwroll." + l.DNSDomain}, Exchange: sh,
		Servers:        []deploy.Server{{Name: "CAS1", Shell: sh}, {Name: "CAS2", Shell: sh}},
		ServiceAccount: "svc_gwroll", ServiceAccountPassword: "Gw-Roll-Svc-Passw0rd!"}
	plan, err := d.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Apply(ctx, plan); err != nil {
		t.Fatal(err)
	}
	first := h.ASA("CAS1")[0].Password

	// The roll section, once with a password and once with a keytab.
	write := func(name string, b []byte) string {
		p := filepath.Join(f.dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kt, err := l.ExportKeytab(ctx, l.AdminUser)
	if err != nil {
		t.Fatal(err)
	}
	ktb, err := kt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	section := func(name string) *rollConfig {
		return &rollConfig{AD: siteconfig.AD{LDAPURL: l.LDAPSURL(), CAFile: l.CAFile, ServerName: l.HostName, BindUser: l.AdminBindName()},
			ASA: "GWRASA", Servers: []siteconfig.Server{{Name: "CAS1"}, {Name: "CAS2"}},
			WinRM: siteconfig.WinRM{Address: ts.Addr(), User: ts.User, Password: siteconfig.Secret{File: write("winrm.pw", []byte(ts.Password+"\n"))},
				TestHost: true},
			Every: "20s", Lease: "8s", Interval: "1s", Name: name}
	}
	a, b := section("replica-a"), section("replica-b")
	a.BindPassword = siteconfig.Secret{File: write("bind.pw", []byte(l.AdminPassword+"\n"))}
	b.BindKeytab = write("bind.keytab", ktb)
	// b has no password at all: it logs on to WinRM with Kerberos too, to
	// the host's HTTP/ SPN (the listener is an address, so it is named).
	spn, hostKT, err := l.HTTPHost(ctx, "GWCAS1", "Gw-Cas1-Host-Passw0rd-0123456789!")
	if err != nil {
		t.Fatal(err)
	}
	ts.AcceptKerberos(&kerberos.Acceptor{Keytab: hostKT})
	b.WinRM = siteconfig.WinRM{Address: ts.Addr(), Auth: "kerberos", SPN: spn, TestHost: true}

	// -check reads it all and changes nothing.
	var order []string
	paths := map[string]string{}
	for _, rc := range []*rollConfig{a, b} {
		c := f.conf
		c.Roll = rc
		path := f.writeConfig(t, c)
		out, err := exec.Command(f.bin, "-check", "-config", path).CombinedOutput()
		for _, want := range []string{"ok   roll: AD: bound to " + l.LDAPSURL(), "ok   roll: ASA: GWRASA$ password set",
			"ok   roll: journal: last roll finished by apply ", "ok   roll: CAS2 [TEST HOST: modeled Windows, not a real Exchange]: decrypts (AD's password is its Latest)",
			// Through the roll's AD connection: the accounts' types against the RC4 cut-off.
			"ok   rc4_cutoff GWRASA$: msDS-SupportedEncryptionTypes ", "ok   rc4_cutoff svc_gw: msDS-SupportedEncryptionTypes "} {
			if !strings.Contains(string(out), want) {
				t.Errorf("-check for %s lacks %q (%v):\n%s", rc.Name, want, err, out)
			}
		}
		t.Logf("gateway -check with %s's roll section:\n%s", rc.Name, grepLines(string(out), "roll"))
		pr := f.startCmd(t, exec.Command(f.bin, "-config", path))
		mu.Lock()
		procs[rc.Name], paths[rc.Name] = pr, path
		mu.Unlock()
		order = append(order, rc.Name)
	}
	if h.ASA("CAS1")[0].Password != first {
		t.Fatal("-check or a start changed a server")
	}
	proc := func(name string) *process {
		mu.Lock()
		defer mu.Unlock()
		return procs[name]
	}
	status := func(name string) deploy.RollStatus {
		code, body := f.admin(t, proc(name), "/v1/roll", true)
		var st deploy.RollStatus
		if code != 200 || json.Unmarshal([]byte(body), &st) != nil {
			t.Fatalf("/v1/roll of %s: %d %s", name, code, body)
		}
		return st
	}
	kvno := func() int {
		acct, err := conn.FindAccount(ctx, "GWRASA$")
		if err != nil {
			t.Fatal(err)
		}
		return acct.KeyVersion
	}
	netrc := write("roll.netrc", []byte("machine 127.0.0.1 login alice password "+lab.UserPassword+"\n"))
	var passwords []string
	for round, step := range []struct {
		name string
		hit  func(before string, kv int) bool
	}{
		{"CAS1 holds the new password", func(before string, kv int) bool { return h.ASA("CAS1")[0].Password != before }},
		{"CAS2 holds it too, AD not yet", func(before string, kv int) bool { return h.ASA("CAS2")[0].Password != before }},
		{"AD holds it, the journal is not done", func(before string, kv int) bool { return kvno() != kv }},
	} {
		before, kv := h.ASA("CAS1")[0].Password, kvno()
		rolls, logged := map[string]int{}, map[string]int{}
		for _, name := range order {
			rolls[name] = status(name).Rolls
			logged[name] = strings.Count(proc(name).log(), `"msg":"ASA roll"`)
		}
		mu.Lock()
		killed, hit = "", func() bool { return step.hit(before, kv) }
		mu.Unlock()
		deadline := time.Now().Add(90 * time.Second)
		for {
			mu.Lock()
			k := killed
			mu.Unlock()
			if k != "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: no roll reached %q:\n%s\n%s", round, step.name, proc("replica-a").log(), proc("replica-b").log())
			}
			time.Sleep(50 * time.Millisecond)
		}
		if killed == "?" {
			t.FailNow()
		}
		rolled := h.ASA("CAS1")[0].Password
		passwords = append(passwords, before, rolled)
		switch c2, kv2 := h.ASA("CAS2")[0].Password, kvno(); {
		case round == 0 && (c2 != before || kv2 != kv), round == 1 && (c2 != rolled || kv2 != kv), round == 2 && (c2 != rolled || kv2 == kv):
			t.Fatalf("round %d: killed elsewhere than when %s", round, step.name)
		}
		survivor := order[0]
		if survivor == killed {
			survivor = order[1]
		}

		// The survivor first leaves the fresh claim alone, then takes it
		// over; devices are served meanwhile.
		if code, _ := f.curl(t, proc(survivor), "Cmd=FolderSync&User=alice&DeviceId=ROLLPHONE&DeviceType=iPhone", "--netrc-file", netrc); code != 200 {
			t.Errorf("round %d: a device during the roll: %d", round, code)
		}
		sawClaim := false
		deadline = time.Now().Add(60 * time.Second)
		for {
			st := status(survivor)
			sawClaim = sawClaim || st.RollingBy == killed
			if st.Rolls == rolls[survivor]+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %s did not finish the roll: %+v\n%s", round, survivor, st, proc(survivor).log())
			}
			time.Sleep(200 * time.Millisecond)
		}
		if !sawClaim {
			t.Errorf("round %d: %s never reported %s's open claim", round, survivor, killed)
		}
		// Its log line (written within 200 ms).
		var took string
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if log := proc(survivor).log(); strings.Count(log, `"msg":"ASA roll"`) > logged[survivor] {
				took = grepLines(log, `"msg":"ASA roll"`)
				break
			}
		}
		t.Logf("round %d: %s killed when %s; %s took over:\n%s", round, killed, step.name, survivor, took[strings.LastIndexByte(took, '\n')+1:])
		if round == 2 && !strings.HasSuffix(took, "had reached every server and AD; recorded it as done)\"}") {
			t.Errorf("round 2: the roll that had reached AD was not recorded as done: %s", took)
		}

		// The roll finished with the dead replica's password, everywhere,
		// the old one kept as Previous (tickets still in use decrypt).
		for _, s := range []string{"CAS1", "CAS2"} {
			if c := h.ASA(s); len(c) < 2 || c[0].Password != rolled || c[1].Password != before {
				t.Fatalf("round %d: %s does not hold the started roll's password as Latest and the old one as Previous", round, s)
			}
		}
		states, err := (&exchange.Org{Shell: sh}).CheckASA(ctx, exchange.Roll{Servers: []string{"CAS1", "CAS2"},
			User: l.Domain + `\GWRASA$`, AD: conn, Kerberos: d.Kerberos})
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range states {
			if !st.LatestIsCurrent {
				t.Fatalf("round %d: after the takeover: %s", round, st)
			}
		}
		note, err := conn.ReadNote(ctx, "GWRASA$")
		if err != nil {
			t.Fatal(err)
		}
		if j, err := deploy.ParseJournal(note); err != nil || !j.Done || j.Owner != survivor {
			t.Fatalf("round %d: journal %q %v", round, note, err)
		}
		st := status(survivor)
		if !st.OK || st.ASA != "GWRASA$" || st.Replica != survivor || time.Since(st.LastRoll) > time.Minute ||
			!st.NextRoll.Equal(st.LastRoll.Add(20*time.Second)) || st.NextCheck.Before(st.LastCheck) || st.Every != "20s" {
			t.Errorf("round %d: status after the roll: %+v", round, st)
		}
		_, metrics := f.admin(t, proc(survivor), "/metrics", true)
		for _, want := range []string{fmt.Sprintf(`segkcd_asa_rolls_total{asa="GWRASA$"} %d`, st.Rolls),
			`segkcd_asa_roll_last_check_ok{asa="GWRASA$"} 1`, `segkcd_asa_roll_next_roll_timestamp_seconds{asa="GWRASA$"}`} {
			if !strings.Contains(metrics, want) {
				t.Errorf("round %d: metrics lack %s", round, want)
			}
		}
		for _, s := range append([]string{l.AdminPassword, ts.Password}, passwords...) {
			if strings.Contains(proc(survivor).log()+proc(killed).log()+metrics, s) {
				t.Fatalf("round %d: a password is in a log or the metrics", round)
			}
		}
		// The dead replica is started again for the next round.
		pr := f.startCmd(t, exec.Command(f.bin, "-config", paths[killed]))
		mu.Lock()
		procs[killed] = pr
		mu.Unlock()
	}

	if users := ts.KerberosUsers(); len(users) == 0 || users[0] != l.AdminUser+"@"+l.Realm {
		t.Errorf("replica-b did not log on to WinRM with Kerberos: %v", users)
	}

	// A replica that cannot bind says so in /v1/roll, with a hint, and
	// serves devices and stays ready; -check fails on it.
	wrong := section("replica-c")
	wrong.BindPassword = siteconfig.Secret{File: write("wrong.pw", []byte("Not-The-Passw0rd!\n"))}
	c := f.conf
	c.Roll = wrong
	path := f.writeConfig(t, c)
	out, err := exec.Command(f.bin, "-check", "-config", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "FAIL roll: AD and WinRM") || !strings.Contains(string(out), "hint: ") {
		t.Errorf("-check with a wrong bind password: %v\n%s", err, out)
	}
	cp := f.startCmd(t, exec.Command(f.bin, "-config", path))
	cp.wait(t, `"msg":"ASA roll: cannot reach AD or the servers; trying again"`)
	code, body := f.admin(t, cp, "/v1/roll", true)
	var cst deploy.RollStatus
	if code != 200 || json.Unmarshal([]byte(body), &cst) != nil || cst.OK || cst.Failures != 1 || cst.LastError == "" ||
		!strings.HasPrefix(cst.Hint, "roll section: ") || cst.ASA != "GWRASA$" || cst.Every != "20s" || cst.Replica != "replica-c" || cst.NextCheck.IsZero() {
		t.Errorf("/v1/roll of a replica that cannot bind: %d %s", code, body)
	}
	t.Logf("-check with a wrong bind password:\n%s\n/v1/roll of that replica: %s", grepLines(string(out), ""), body)
	if code, body := f.admin(t, cp, "/readyz", true); code != 200 {
		t.Errorf("a failing roll made the gateway unready: %d %s", code, body)
	}
	if code, _ := f.curl(t, cp, "Cmd=FolderSync&User=alice&DeviceId=ROLLPHONE&DeviceType=iPhone", "--netrc-file", netrc); code != 200 {
		t.Errorf("a device at the replica that cannot roll: %d", code)
	}
	for _, s := range append([]string{l.AdminPassword, ts.Password, "Not-The-Passw0rd!"}, passwords...) {
		if strings.Contains(string(out)+cp.log()+body, s) {
			t.Fatal("a password is in -check's output, a log or /v1/roll")
		}
	}

	// Someone who may write the ASA's note claims the roll as "now" (issue
	// 27): with the password overdue by more than a check and a lease,
	// -check fails and says why.
	for i := 0; ; i++ {
		note, err := conn.ReadNote(ctx, "GWRASA$")
		if err != nil {
			t.Fatal(err)
		}
		squat, _ := json.Marshal(deploy.Journal{Kind: "asa-roll", Owner: "squatter", Claimed: time.Now()})
		if _, err = conn.SwapNote(ctx, "GWRASA$", note, string(squat)); err == nil {
			break
		} else if i == 20 {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
	}
	tight := section("replica-d")
	tight.BindPassword = a.BindPassword
	tight.Every, tight.Interval, tight.Lease = "1s", "1s", "1s"
	time.Sleep(4 * time.Second) // overdue for tight: past every, a check and a lease
	c = f.conf
	c.Roll = tight
	out, err = exec.Command(f.bin, "-check", "-config", f.writeConfig(t, c)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "FAIL roll: journal") || !strings.Contains(string(out), "squatter claimed a roll") ||
		!strings.Contains(string(out), "roll.replicas") {
		t.Errorf("-check with an overdue roll held by another's claim: %v\n%s", err, grepLines(string(out), "roll"))
	}
}

// admin GETs path from the process's admin API, with the fixture's
// token or without.
func (f *fixture) admin(t *testing.T, pr *process, path string, token bool) (int, string) {
	t.Helper()
	var v struct{ Addr string }
	for _, line := range strings.Split(pr.log(), "\n") {
		if strings.Contains(line, `"msg":"admin API listening"`) {
			json.Unmarshal([]byte(line), &v)
		}
	}
	if v.Addr == "" {
		t.Fatalf("no admin listener in:\n%s", pr.log())
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+v.Addr+path, nil)
	if token {
		req.Header.Set("Authorization", "Bearer admin-token-0123456789")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// grepLines is the lines of log that hold what.
func grepLines(log, what string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, what) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
