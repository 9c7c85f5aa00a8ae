package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestServiceUnit: the systemd unit passes systemd-analyze verify with
// not one remark (verify exits 0 on an unknown key, so any output fails),
// its sandbox scores an exposure of at most 2.0 of 10, and the program it
// starts accepts its command line.
func TestServiceUnit(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze is missing (make deps installs systemd)")
	}
	unit, err := os.ReadFile("segkcd-gateway.service")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "segkcd-gateway")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// verify wants the ExecStart binary where the unit says: here, ours.
	text := strings.ReplaceAll(string(unit), "/usr/local/bin/segkcd-gateway", bin)
	path := filepath.Join(dir, "segkcd-gateway.service")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The threshold is on systemd's 0-100 scale: 20 is an exposure of 2.0.
	if out, err := exec.Command("systemd-analyze", "security", "--offline=true", "--threshold=20", path).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze security: %v\n%s", err, out)
	}
	// The ExecStart line's flags are the program's: -config with a file
	// that is not there fails on the file, not on the flags.
	for _, l := range strings.Split(text, "\n") {
		if args, ok := strings.CutPrefix(l, "ExecStart="); ok {
			f := strings.Fields(args)
			out, _ := exec.Command(f[0], f[1:]...).CombinedOutput()
			if !strings.Contains(string(out), "config: open /etc/segkcd/gateway.json") {
				t.Errorf("%s: %s", args, out)
			}
		}
	}
}
