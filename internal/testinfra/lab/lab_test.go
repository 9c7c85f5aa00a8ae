package lab

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestSetGlobals(t *testing.T) {
	conf := "# Global parameters\n[global]\n\tnetbios name = DC1\n\tserver services = s3fs, rpc, nbt\n\tLog File = /var/log/x\n\n[sysvol]\n\tpath = /x\n"
	got := setGlobals(conf, map[string]string{"server services": "ldap, kdc", "log file": "/lab/log", "pid directory": "/lab/run"})
	want := "# Global parameters\n[global]\n\tnetbios name = DC1\n\tlog file = /lab/log\n\tpid directory = /lab/run\n\tserver services = ldap, kdc\n\n[sysvol]\n\tpath = /x\n"
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	// Idempotent.
	if again := setGlobals(got, map[string]string{"server services": "ldap, kdc", "log file": "/lab/log", "pid directory": "/lab/run"}); again != got {
		t.Fatalf("second pass changed it:\n%s", again)
	}
}

// fakeTB records how a test ended.
type fakeTB struct {
	testing.TB
	fatal, skip string
}

func (f *fakeTB) Helper()           {}
func (f *fakeTB) Fatal(args ...any) { f.fatal = fmt.Sprint(args...) }
func (f *fakeTB) Skip(args ...any)  { f.skip = fmt.Sprint(args...) }

// In CI a missing lab fails the test; elsewhere it skips, saying how to get one.
func TestUnavailableFailsInCI(t *testing.T) {
	err := errors.New("samba not installed")
	ci := &fakeTB{}
	unavailable(ci, err, true)
	if ci.fatal == "" || ci.skip != "" || !strings.Contains(ci.fatal, "samba not installed") {
		t.Fatalf("CI: fatal=%q skip=%q", ci.fatal, ci.skip)
	}
	dev := &fakeTB{}
	unavailable(dev, err, false)
	if dev.skip == "" || dev.fatal != "" || !strings.Contains(dev.skip, "scripts/lab deps") {
		t.Fatalf("dev: fatal=%q skip=%q", dev.fatal, dev.skip)
	}
}

func TestFreeLoopback(t *testing.T) {
	ip, err := freeLoopback()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ip, "127.") || strings.HasPrefix(ip, "127.0.0.") {
		t.Fatalf("address %s", ip)
	}
}
