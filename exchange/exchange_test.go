package exchange_test

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/config"

	"github.com/segkcd/segkcd"
	"github.com/segkcd/segkcd/exchange"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/winrs"
	"github.com/segkcd/segkcd/winrs/winrstest"
)

var (
	theLab lab.Shared
	update = flag.Bool("update", false, "rewrite the golden scripts in testdata")
)

func TestMain(m *testing.M) { os.Exit(theLab.Run(m)) }

// org is an Exchange organisation (CAS1 2019, CAS2 2016, CAS3 2013) behind
// the WS-Man test host, reached over real WinRM.
func org(t *testing.T) (*exchange.Org, *winrstest.Server) {
	t.Helper()
	h := winrstest.NewHost("cas1")
	h.AddExchangeServer("CAS1", winrstest.Exchange2019)
	h.AddExchangeServer("CAS2", winrstest.Exchange2016)
	h.AddExchangeServer("CAS3", winrstest.Exchange2013)
	ts := winrstest.StartTest(t, h)
	sh, err := winrs.New(ts.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	return &exchange.Org{Shell: sh}, ts
}

func TestVersionsAndOperations(t *testing.T) {
	o, ts := org(t)
	ctx := context.Background()
	for srv, want := range map[string]string{"CAS1": "2019/SE", "CAS2": "2016", "CAS3": "2013"} {
		v, err := o.Version(ctx, srv)
		if err != nil || v.Product() != want {
			t.Fatalf("%s: %v %v", srv, v, err)
		}
	}
	st, err := o.ASAStatus(ctx, "CAS3")
	if err != nil || st.Latest != nil {
		t.Fatalf("empty status: %+v %v", st, err)
	}
	if ch, err := o.SetASA(ctx, "CAS1", `CORP\EXCHASA$`, "first-Passw0rd!"); err != nil || ch.Action != segkcd.Modified || ch.Object != "CAS1" {
		t.Fatal(err)
	}
	if _, err := o.SetASA(ctx, "CAS1", `CORP\EXCHASA$`, "second-Passw0rd!"); err != nil {
		t.Fatal(err)
	}
	st, err = o.ASAStatus(ctx, "CAS1")
	if err != nil || st.Latest == nil || st.Previous == nil || st.Latest.UserName != `CORP\EXCHASA$` || st.Latest.WhenAdded.Before(st.Previous.WhenAdded) {
		t.Fatalf("status: %+v %v", st, err)
	}
	// Copy: CAS2 (2016) and CAS3 (2013, *-ClientAccessServer) get CAS1's latest, inside Exchange.
	if _, err := o.CopyASA(ctx, "CAS1", "CAS2", "CAS3"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"CAS2", "CAS3"} {
		if got := ts.Host.ASA(s); len(got) != 1 || got[0].Password != "second-Passw0rd!" {
			t.Fatalf("%s after copy: %+v", s, got)
		}
	}
	if _, err := o.RemoveASA(ctx, "CAS3"); err != nil || len(ts.Host.ASA("CAS3")) != 0 {
		t.Fatalf("remove: %v", err)
	}
	if _, err := o.ASAStatus(ctx, "NOSUCH"); err == nil {
		t.Fatal("unknown server accepted")
	}
}

// The password travels in the script; PowerShell's error record quotes the
// line; the error the caller sees does not show it.
func TestPasswordNotInErrors(t *testing.T) {
	o, ts := org(t)
	const pw = "Leaky'Passw0rd\u2019!"
	ts.Host.FailOn("set-clientaccessservice", errors.New("Set-ClientAccessService: At line:3 char:1\n+ $secure = ConvertTo-SecureString -String 'Leaky''Passw0rd\u2019\u2019!' -AsPlainText -Force"))
	_, err := o.SetASA(context.Background(), "CAS1", `CORP\EXCHASA$`, pw)
	var se *winrs.ScriptError
	var ee *exchange.Error
	if !errors.As(err, &se) || !errors.As(err, &ee) || ee.Op != "set ASA credential" || ee.Server != "CAS1" ||
		strings.Contains(err.Error(), "Leaky") || !strings.Contains(se.Message, "[REDACTED]") {
		t.Fatalf("error: %v", err)
	}
}

func TestGoldenScripts(t *testing.T) {
	o, ts := org(t)
	ctx := context.Background()
	if _, err := o.SetASA(ctx, "CAS1", `CORP\EXCHASA$`, "Golden-Passw0rd!"); err != nil {
		t.Fatal(err)
	}
	if _, err := o.CopyASA(ctx, "CAS1", "CAS3"); err != nil {
		t.Fatal(err)
	}
	if _, err := o.ASAStatus(ctx, "CAS1"); err != nil {
		t.Fatal(err)
	}
	scripts := ts.Host.Scripts()
	// version(CAS1), set, version(CAS3), copy, status: each version is read once
	if len(scripts) != 5 {
		t.Fatalf("%d scripts, want 5 (versions read once)", len(scripts))
	}
	names := map[int]string{0: "version", 1: "set-asa", 3: "copy-asa-2013", 4: "asa-status"}
	for i, name := range names {
		path := filepath.Join("testdata", name+".ps1")
		if *update {
			os.MkdirAll("testdata", 0o755)
			os.WriteFile(path, []byte(strings.ReplaceAll(scripts[i], "Golden-Passw0rd!", "<password>")), 0o644)
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (go test ./exchange -run Golden -update)", err)
		}
		if got := strings.ReplaceAll(scripts[i], "Golden-Passw0rd!", "<password>"); string(want) != got {
			t.Errorf("%s differs:\n--- want\n%s\n--- got\n%s", name, want, got)
		}
	}
}

// WinRM with Kerberos: alice's ticket for HTTP/cas1 from the lab KDC,
// validated by the test host with a keytab derived from the host account's
// password.
func TestKerberosWinRM(t *testing.T) {
	l := theLab.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spn, kt, err := l.HTTPHost(ctx, "CAS1", "Cas1-Host-Passw0rd-0123456789!")
	if err != nil {
		t.Fatal(err)
	}
	kcfg, err := config.Load(l.Krb5Conf)
	if err != nil {
		t.Fatal(err)
	}
	alice := kerberos.NewWithPassword("alice", l.Realm, lab.UserPassword, kcfg)

	// Plain HTTP, as WinRM's default listener: one mutual logon per
	// connection, then every message sealed with the Kerberos context; the
	// host takes nothing in clear.
	h := winrstest.NewHost("cas1")
	h.AddExchangeServer("CAS1", winrstest.Exchange2019)
	ts, err := winrstest.StartWith(h, winrstest.Options{User: "unused", Password: "unused-Passw0rd!"})
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	ts.AcceptKerberos(&kerberos.Acceptor{Keytab: kt})
	sh, err := winrs.New(winrs.Config{Host: "127.0.0.1", Port: ts.Port(), Auth: winrs.Kerberos{Client: alice, SPN: spn},
		Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	o := &exchange.Org{Shell: sh}
	if _, err := o.ASAStatus(ctx, "CAS1"); err != nil {
		t.Fatal(err)
	}
	if users := ts.KerberosUsers(); len(users) != 1 || users[0] != "alice@"+l.Realm || ts.Sealed() < 5 {
		t.Fatalf("kerberos users %v, sealed %d", users, ts.Sealed())
	}

	// HTTPS: no sealing, a fresh authenticator with every request.
	ts2, pki := winrstest.StartTLSTest(t, h, winrstest.Options{})
	ts2.AcceptKerberos(&kerberos.Acceptor{Keytab: kt})
	shTLS, err := winrs.New(winrs.Config{Host: "127.0.0.1", Port: ts2.Port(), TLS: pki.ClientTLS(),
		Auth: winrs.Kerberos{Client: alice, SPN: spn}, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&exchange.Org{Shell: shTLS}).ASAStatus(ctx, "CAS1"); err != nil {
		t.Fatal(err)
	}
	if users := ts2.KerberosUsers(); len(users) < 4 || ts2.Sealed() != 0 {
		t.Fatalf("HTTPS: kerberos users %v, sealed %d", users, ts2.Sealed())
	}

	// Without a valid ticket (bob's password is wrong): refused.
	bad := kerberos.NewWithPassword("bob", l.Realm, "wrong", kcfg)
	sh2, _ := winrs.New(winrs.Config{Host: "127.0.0.1", Port: ts.Port(), Auth: winrs.Kerberos{Client: bad, SPN: spn},
		Timeout: 10 * time.Second})
	if _, err := (&exchange.Org{Shell: sh2}).ASAStatus(ctx, "CAS1"); !errors.Is(err, kerberos.ErrPreauthFailed) {
		t.Fatalf("a client without a ticket: %v", err)
	}
}

// Hostile names give errors, never a panic.
func TestSetASAHostileNames(t *testing.T) {
	o, _ := org(t)
	ctx := context.Background()
	for _, c := range []struct{ server, user, pw string }{
		{"CAS1", "CORP\\EX\x00ASA$", "Passw0rd!"}, {"CA\x00S1", `CORP\EXCHASA$`, "Passw0rd!"}, {"CAS1", `CORP\EXCHASA$`, "two\nlines"},
	} {
		if _, err := o.SetASA(ctx, c.server, c.user, c.pw); !errors.Is(err, exchange.ErrInvalid) {
			t.Fatalf("%q %q accepted", c.server, c.user)
		}
	}
}
