package lab

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// A binary that attaches to a running lab sees the same domain and DC, keeps
// its files in a directory of its own, cannot stop the DC, and leaves it
// running when it closes.
func TestAttach(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var s Shared
	defer func() {
		if s.lab != nil {
			s.lab.Close()
		}
	}()
	host := s.Get(t) // under make test, itself attached to the run's DC
	dir := host.dcDir

	a, err := Attach(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.Realm != host.Realm || a.IP != host.IP || a.HostName != host.HostName || a.BaseDN != host.BaseDN ||
		a.Krb5Conf != host.Krb5Conf || a.CAFile != host.CAFile || a.AdminPassword != host.AdminPassword {
		t.Fatalf("attached %+v\nstarted %+v", a, host)
	}
	if a.Dir == dir || a.Dir == host.Dir || !strings.HasPrefix(filepath.Base(a.Dir), "segkcd-lab-") {
		t.Fatalf("the attached lab's own directory is %s (the DC's is %s)", a.Dir, dir)
	}
	c, err := a.Dial(ctx)
	if err != nil {
		t.Fatalf("LDAPS through the attached lab: %v", err)
	}
	c.Close()
	if out, err := a.Ldbsearch(ctx, a.BaseDN, "(sAMAccountName=alice)", "sAMAccountName"); err != nil || !strings.Contains(out, "sAMAccountName: alice") {
		t.Fatalf("ldbsearch through the attached lab: %v\n%s", err, out)
	}
	if env := a.Command(ctx, "attach.cc", "klist").Env; !slices.Contains(env, "KRB5CCNAME=FILE:"+filepath.Join(a.Dir, "attach.cc")) {
		t.Fatalf("the attached lab's credential caches are not its own: %v", env)
	}
	for name, f := range map[string]func() error{
		"Pause": a.Pause, "Resume": a.Resume, "Restart": func() error { return a.Restart(ctx) },
	} {
		if err := f(); !errors.Is(err, errAttached) {
			t.Errorf("%s on an attached lab: %v", name, err)
		}
	}
	own := a.Dir
	a.Close()
	if _, err := os.Stat(own); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Close left %s: %v", own, err)
	}
	if !host.ready() {
		t.Fatal("the DC stopped when an attached binary closed")
	}

	// A directory no DC serves.
	empty := t.TempDir()
	if err := os.WriteFile(filepath.Join(empty, stateFile), []byte(`{"realm":"X.TEST","domain":"X"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Attach(ctx, empty); err == nil || !strings.Contains(err.Error(), "no DC serves it") {
		t.Fatalf("attach to a lab nobody runs: %v", err)
	}
}
