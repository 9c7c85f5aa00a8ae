package lab

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// Shared is the lab of a test binary, found on first use and closed by Run.
// Under `make test` it is the one DC of the whole run (SharedEnv), which
// every test binary attaches to; a binary run alone (go test ./seg)
// provisions a lab of its own. Declare it in a test file and call Run from
// TestMain:
//
//	var theLab lab.Shared
//	func TestMain(m *testing.M) { os.Exit(theLab.Run(m)) }
//	func TestX(t *testing.T) { l := theLab.Get(t) ... }
//
// Tests on a shared DC use account names and SPNs of their package's own,
// and change nothing domain-wide; a test that must (stop the DC, roll
// krbtgt) takes Own instead.
type Shared struct {
	once sync.Once
	lab  *Lab
	err  error

	ownOnce sync.Once
	own     *Lab
	ownErr  error
}

// Run runs the tests and then closes the labs that were started or attached.
func (s *Shared) Run(m *testing.M) int {
	code := m.Run()
	if s.own != nil {
		s.own.Close()
	}
	if s.lab != nil {
		s.lab.Close()
	}
	return code
}

// Get returns the running, seeded lab: the run's shared DC when SharedEnv
// names one, else a lab of this binary's own. When the lab cannot start, the
// test fails if CI=true (CI must never pass by skipping) and is skipped
// otherwise, with the reason and how to get a lab.
func (s *Shared) Get(t testing.TB) *Lab {
	t.Helper()
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if dir := os.Getenv(SharedEnv); dir != "" {
			s.lab, s.err = Attach(ctx, dir)
			return
		}
		s.lab, s.err = startSeeded(ctx)
	})
	if s.err != nil {
		unavailable(t, s.err, os.Getenv("CI") == "true")
	}
	return s.lab
}

// Own returns a lab that no other test binary uses, for tests that stop,
// pause or restart the DC, or change the domain for everyone (krbtgt's
// key). It is Get's lab when that is this binary's own already; under a
// shared DC it is a second, seeded lab, started once.
func (s *Shared) Own(t testing.TB) *Lab {
	t.Helper()
	if os.Getenv(SharedEnv) == "" {
		return s.Get(t)
	}
	s.ownOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		s.own, s.ownErr = startSeeded(ctx)
	})
	if s.ownErr != nil {
		unavailable(t, s.ownErr, os.Getenv("CI") == "true")
	}
	return s.own
}

// startSeeded starts a temporary lab and seeds it.
func startSeeded(ctx context.Context) (*Lab, error) {
	opt := Options{InstallPackages: os.Getenv("CI") == "true"}
	if testing.Verbose() {
		opt.Log = os.Stderr
	}
	l, err := Start(ctx, opt)
	if err != nil {
		return nil, err
	}
	if err := l.Seed(ctx); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// unavailable ends a test that needs the lab: a failure in CI, a skip elsewhere.
func unavailable(t testing.TB, err error, ci bool) {
	t.Helper()
	msg := fmt.Sprintf("AD lab unavailable: %v\n(the lab needs root and Samba: run `scripts/lab deps` as root, or `make test`)", err)
	if ci {
		t.Fatal(msg)
	} else {
		t.Skip(msg)
	}
}

// SharedDCs is one two-DC domain per test binary (Options.MultiDC and
// AddDC), seeded, started on first use; call Close from TestMain after the
// tests. Tests that kill or pause a DC must leave it running again.
type SharedDCs struct {
	once     sync.Once
	dc1, dc2 *Lab
	err      error
}

// Get returns the domain's two DCs; DC1 holds every FSMO role at first.
// When they cannot start, the test fails if CI=true, and is skipped
// otherwise.
func (s *SharedDCs) Get(t testing.TB) (dc1, dc2 *Lab) {
	t.Helper()
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		opt := Options{MultiDC: true, InstallPackages: os.Getenv("CI") == "true"}
		if testing.Verbose() {
			opt.Log = os.Stderr
		}
		if s.dc1, s.err = Start(ctx, opt); s.err != nil {
			return
		}
		if s.err = s.dc1.Seed(ctx); s.err == nil {
			s.dc2, s.err = s.dc1.AddDC(ctx, "dc2")
		}
		if s.err != nil {
			s.dc1.Close()
			s.dc1 = nil
		}
	})
	if s.err != nil {
		unavailable(t, s.err, os.Getenv("CI") == "true")
	}
	return s.dc1, s.dc2
}

// Close stops both DCs, if they were started.
func (s *SharedDCs) Close() {
	if s.dc2 != nil {
		s.dc2.Close()
	}
	if s.dc1 != nil {
		s.dc1.Close()
	}
}
