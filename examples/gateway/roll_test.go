package main

import (
	"context"
	"encoding/json"
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
	"github.com/segkcd/segkcd/exchange"
	"github.com/segkcd/segkcd/internal/siteconfig"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/winrs"
	"github.com/segkcd/segkcd/winrs/winrstest"
)

// TestGatewayRoll: two replicas of the program with the same roll
// section (one binding to AD with a password, the other with a keytab)
// against the lab's AD and a WS-Man test host (a model of Windows with an
// Exchange organisation, not a real Exchange). When the ASA's password
// comes due, exactly one claims the roll; the test kills it (SIGKILL) the
// moment its new password reached CAS1, before CAS2 and AD have it. The
// other sees the open claim, takes it over after the lease, and finishes
// the roll with the password the dead one started; /v1/roll and /metrics
// say so, and devices are served throughout.
func TestGatewayRoll(t *testing.T) {
	f := newFixture(t)
	l := f.lab
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// The site as provision leaves it: an ASA whose password CAS1 and
	// CAS2 hold, on the test host that runs the Exchange cmdlets.
	h := winrstest.NewHost("cas1")
	h.AddExchangeServer("CAS1", winrstest.Exchange2019)
	h.AddExchangeServer("CAS2", winrstest.Exchange2016)
	// Once armed (started is set), the host kills the replica that
	// claimed the roll as soon as CAS1 holds its new password: it calls
	// AfterRun before it answers the script that set it, so the replica
	// dies mid-roll.
	var mu sync.Mutex
	var started, killed string
	procs := map[string]*process{}
	var conn *ad.Conn
	h.AfterRun = func() {
		mu.Lock()
		defer mu.Unlock()
		if started == "" || killed != "" || h.ASA("CAS1")[0].Password == started {
			return
		}
		note, err := conn.ReadNote(context.Background(), "GWRASA$")
		j, jerr := deploy.ParseJournal(note)
		pr := procs[j.Owner]
		if err != nil || jerr != nil || pr == nil {
			t.Errorf("CAS1 changed, yet the note names no replica: %q %v %v", note, err, jerr)
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

	// -check reads it all and changes nothing.
	var order []string
	for _, rc := range []*rollConfig{a, b} {
		c := f.conf
		c.Roll = rc
		path := f.writeConfig(t, c)
		out, err := exec.Command(f.bin, "-check", "-config", path).CombinedOutput()
		for _, want := range []string{"ok   roll: AD: bound to " + l.LDAPSURL(), "ok   roll: ASA: GWRASA$ password set",
			"ok   roll: journal: none yet", "ok   roll: CAS2 [TEST HOST: modeled Windows, not a real Exchange]: decrypts (AD's password is its Latest)"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("-check for %s lacks %q (%v):\n%s", rc.Name, want, err, out)
			}
		}
		t.Logf("gateway -check with %s's roll section:\n%s", rc.Name, grepLines(string(out), "roll"))
		pr := f.startCmd(t, exec.Command(f.bin, "-config", path))
		mu.Lock()
		procs[rc.Name] = pr
		mu.Unlock()
		order = append(order, rc.Name)
	}
	if h.ASA("CAS1")[0].Password != first {
		t.Fatal("-check or a start changed a server")
	}
	mu.Lock()
	started = first
	mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		k := killed
		mu.Unlock()
		if k != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no roll started within a minute:\n%s\n%s", procs["replica-a"].log(), procs["replica-b"].log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if killed == "?" {
		t.FailNow()
	}
	half := h.ASA("CAS1")[0].Password
	if h.ASA("CAS2")[0].Password != started {
		t.Fatal("killed after CAS2 had the new password too: not mid-roll")
	}
	survivor := order[0]
	if survivor == killed {
		survivor = order[1]
	}
	sp := procs[survivor]

	// The survivor first leaves the fresh claim alone, then takes it over.
	status := func() deploy.RollStatus {
		code, body := f.admin(t, sp, "/v1/roll", true)
		var st deploy.RollStatus
		if code != 200 || json.Unmarshal([]byte(body), &st) != nil {
			t.Fatalf("/v1/roll: %d %s", code, body)
		}
		return st
	}
	sawClaim := false
	deadline = time.Now().Add(60 * time.Second)
	for {
		st := status()
		sawClaim = sawClaim || st.RollingBy == killed
		if st.Rolls == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not finish the roll: %+v\n%s", survivor, st, sp.log())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !sawClaim {
		t.Errorf("%s never reported %s's open claim", survivor, killed)
	}
	sp.wait(t, `"msg":"taking over an unfinished ASA roll"`)
	t.Logf("%s killed mid-roll; %s took over:\n%s", killed, survivor, grepLines(sp.log(), "roll"))

	// The roll finished with the dead replica's password, everywhere.
	for _, s := range []string{"CAS1", "CAS2"} {
		if c := h.ASA(s); len(c) < 2 || c[0].Password != half || c[1].Password != started {
			t.Fatalf("%s does not hold the started roll's password as Latest and the old one as Previous", s)
		}
	}
	states, err := (&exchange.Org{Shell: sh}).CheckASA(ctx, exchange.Roll{Servers: []string{"CAS1", "CAS2"},
		User: l.Domain + `\GWRASA$`, AD: conn, Kerberos: d.Kerberos})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range states {
		if !st.LatestIsCurrent {
			t.Fatalf("after the takeover: %s", st)
		}
	}
	note, err := conn.ReadNote(ctx, "GWRASA$")
	if err != nil {
		t.Fatal(err)
	}
	if j, err := deploy.ParseJournal(note); err != nil || !j.Done || j.Owner != survivor {
		t.Fatalf("journal %q %v", note, err)
	}
	st := status()
	if !st.OK || st.ASA != "GWRASA$" || st.Replica != survivor || time.Since(st.LastRoll) > time.Minute ||
		!st.NextRoll.Equal(st.LastRoll.Add(20*time.Second)) || st.NextCheck.Before(st.LastCheck) || st.Every != "20s" {
		t.Errorf("status after the roll: %+v", st)
	}
	_, metrics := f.admin(t, sp, "/metrics", true)
	for _, want := range []string{`segkcd_asa_rolls_total{asa="GWRASA$"} 1`, `segkcd_asa_roll_last_check_ok{asa="GWRASA$"} 1`,
		`segkcd_asa_roll_next_roll_timestamp_seconds{asa="GWRASA$"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// Devices were served by the survivor all along.
	netrc := write("roll.netrc", []byte("machine 127.0.0.1 login alice password "+lab.UserPassword+"\n"))
	if code, _ := f.curl(t, sp, "Cmd=FolderSync&User=alice&DeviceId=ROLLPHONE&DeviceType=iPhone", "--netrc-file", netrc); code != 200 {
		t.Errorf("a device during the roll: %d", code)
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
	for _, s := range []string{l.AdminPassword, ts.Password, half, started, "Not-The-Passw0rd!"} {
		if strings.Contains(string(out)+cp.log()+body, s) {
			t.Fatal("a password is in -check's output, a log or /v1/roll")
		}
		if strings.Contains(sp.log()+procs[killed].log(), s) || strings.Contains(metrics, s) {
			t.Fatal("a password is in a log or the metrics")
		}
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
