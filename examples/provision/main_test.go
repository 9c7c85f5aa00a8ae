package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segkcd/segkcd/internal/lab"
)

var theLab lab.Shared

func TestMain(m *testing.M) { os.Exit(theLab.Run(m)) }

// The demo's promise: the first run creates, the second finds everything
// unchanged, and MIT kvno -U then gets alice a ticket to the mail SPN.
func TestProvisionTwice(t *testing.T) {
	l := theLab.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := config{url: l.LDAPSURL(), caFile: l.CAFile, serverName: l.HostName, bindUser: l.AdminBindName(),
		bindPassword: l.AdminPassword, asa: "EXCHASA", short: true, svc: "svc_awseg", svcPassword: "Test-Svc-Passw0rd!"}

	var first bytes.Buffer
	if err := run(ctx, &first, cfg); err != nil {
		t.Fatalf("%v\n%s", err, first.String())
	}
	if !strings.Contains(first.String(), "7 steps changed the directory") {
		t.Fatalf("first run:\n%s", first.String())
	}
	var second bytes.Buffer
	if err := run(ctx, &second, cfg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(second.String(), "all steps unchanged") || strings.Contains(second.String(), "created") ||
		strings.Contains(second.String(), "modified") {
		t.Fatalf("second run:\n%s", second.String())
	}
	for _, s := range []string{cfg.bindPassword, cfg.svcPassword} {
		if strings.Contains(first.String()+second.String(), s) {
			t.Fatal("a password is in the output")
		}
	}

	cmd := l.Command(ctx, "svc.cc", "kinit", "-f", "svc_awseg")
	cmd.Stdin = strings.NewReader(cfg.svcPassword + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kinit: %s", out)
	}
	if out, err := l.Command(ctx, "svc.cc", "kvno", "-U", "alice", "-P", "http/mail."+l.DNSDomain).CombinedOutput(); err != nil {
		t.Fatalf("kvno -U alice: %s", out)
	}

	// A mail SPN already held by another account stops the run with its holder named.
	bad := cfg
	bad.asa, bad.mail = "EXCHASA7", "mail."+l.DNSDomain
	var out bytes.Buffer
	err := run(ctx, &out, bad)
	if err == nil || !strings.Contains(err.Error(), "CN=EXCHASA,") {
		t.Fatalf("duplicate SPN: %v\n%s", err, out.String())
	}
}
