package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segkcd/segkcd/internal/testinfra/lab"
	"github.com/segkcd/segkcd/kerberos"
)

var theLab lab.Shared

func TestMain(m *testing.M) { os.Exit(theLab.Run(m)) }

const svcPassword = "S4u-Svc-Passw0rd!"

func provision(t *testing.T, l *lab.Lab) string {
	t.Helper()
	spn := "http/mail-s4u." + l.DNSDomain
	err := l.ProvisionKCD(context.Background(), lab.KCD{ASA: "S4UASA", Service: "svc_s4u", Password: svcPassword, SPNs: []string{spn}})
	if err != nil {
		t.Fatal(err)
	}
	return spn
}

// The ccache s4u writes is read by MIT klist, and kvno can use its ticket.
func TestS4UWritesCCacheKlistReads(t *testing.T) {
	l := theLab.Get(t)
	spn := provision(t, l)
	out := filepath.Join(t.TempDir(), "alice.ccache")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), options{user: "svc_s4u", password: svcPassword, krb5conf: l.Krb5Conf,
		impersonate: "alice", spn: spn, out: out, timeout: 30 * time.Second}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "for alice@"+l.Realm) {
		t.Fatal(stdout.String())
	}
	if st, _ := os.Stat(out); st.Mode().Perm() != 0o600 {
		t.Fatalf("ccache mode %v", st.Mode())
	}
	klist, err := l.Command(context.Background(), "unused", "klist", "-f", "-c", out).CombinedOutput()
	if err != nil {
		t.Fatalf("klist -c: %v\n%s", err, klist)
	}
	for _, want := range []string{"Default principal: alice@" + l.Realm, spn + "@" + l.Realm, "svc_s4u@" + l.Realm} {
		if !strings.Contains(string(klist), want) {
			t.Fatalf("klist lacks %q:\n%s", want, klist)
		}
	}
}

func TestS4UFromKinitCCacheAndExitCodes(t *testing.T) {
	l := theLab.Get(t)
	spn := provision(t, l)
	ctx := context.Background()
	cmd := l.Command(ctx, "svc.cc", "kinit", "-f", "svc_s4u")
	cmd.Stdin = strings.NewReader(svcPassword + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kinit: %s", out)
	}
	var stdout, stderr bytes.Buffer
	o := options{ccache: filepath.Join(l.Dir, "svc.cc"), krb5conf: l.Krb5Conf, impersonate: "bob", spn: spn, timeout: 30 * time.Second}
	if code := run(ctx, o, &stdout, &stderr); code != 0 {
		t.Fatalf("from kinit's ccache: exit %d: %s", code, stderr.String())
	}
	// A sensitive user: refused (2) before S4U2Proxy is sent.
	o.impersonate = "carol"
	stderr.Reset()
	if code := run(ctx, o, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "not forwardable") {
		t.Fatalf("carol: exit %d: %s", code, stderr.String())
	}
	// Usage.
	if code := run(ctx, options{}, &stdout, &stderr); code != 1 {
		t.Fatalf("usage: exit %d", code)
	}
	// No KDC: 3.
	conf := filepath.Join(t.TempDir(), "krb5.conf")
	os.WriteFile(conf, []byte("[libdefaults]\n default_realm = "+l.Realm+"\n[realms]\n "+l.Realm+" = {\n  kdc = 127.0.0.1:1\n }\n"), 0o644)
	o = options{user: "svc_s4u", password: svcPassword, krb5conf: conf, impersonate: "alice", spn: spn, timeout: 5 * time.Second}
	if code := run(ctx, o, &stdout, &stderr); code != 3 {
		t.Fatalf("no KDC: exit %d: %s", code, stderr.String())
	}
}

// -out replaces what is at the path with a new 0600 file: an existing
// world-readable file does not keep its mode, and a symlink is replaced,
// not followed to its target.
func TestWriteCCacheReplaces(t *testing.T) {
	dir := t.TempDir()
	tk := &kerberos.Ticket{}
	existing := filepath.Join(dir, "existing")
	os.WriteFile(existing, []byte("old"), 0o644)
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("keep me"), 0o644)
	link := filepath.Join(dir, "link")
	os.Symlink(victim, link)
	for _, p := range []string{existing, link} {
		if err := writeCCache(p, []*kerberos.Ticket{tk}); err != nil {
			t.Fatal(err)
		}
		st, err := os.Lstat(p)
		if err != nil || st.Mode() != 0o600 {
			t.Fatalf("%s: mode %v %v", p, st.Mode(), err)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me" {
		t.Fatal("the symlink's target was written")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".s4u-ccache-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}
