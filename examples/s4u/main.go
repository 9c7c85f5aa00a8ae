// Command s4u gets a ticket to a service on behalf of a user with
// S4U2Self + S4U2Proxy, like MIT `kvno -U user -P spn` or impacket's getST,
// and writes it to an MIT credential cache that klist reads.
//
//	s4u -impersonate alice -spn http/mail.corp.example.com [-user svc_awseg] \
//	    [-keytab svc.keytab | -ccache /tmp/krb5cc_svc] [-krb5conf /etc/krb5.conf] [-out alice.ccache]
//
// Without -keytab or -ccache the service account's password comes from
// $SEGKCD_SVC_PASSWORD (never a flag: ps shows flags). -ccache takes the
// service TGT from a ccache made by `kinit -f`.
//
// A user of a trusting realm (bob@OTHER.REALM, a realm krb5.conf lists) is
// impersonated across the trust.
//
// Exit codes: 0 ticket obtained; 1 usage or configuration; 2 the KDC (or the
// evidence ticket) refused; 3 no KDC answered.
//
// Built with CGO_ENABLED=0 it starts 0.6 ms sooner (no dynamic loader, no
// glibc NSS for the user lookup gokrb5's krb5.conf parser makes), which
// matters when a script runs it in a loop (BENCHMARKS.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/segkcd/segkcd/kerberos"
)

type options struct {
	user, realm, keytab, ccache, krb5conf string
	impersonate, spn, out                 string
	password                              string
	timeout                               time.Duration
	selfOnly                              bool
}

func main() {
	var o options
	flag.StringVar(&o.user, "user", "svc_awseg", "the service account (with -keytab or a password)")
	flag.StringVar(&o.realm, "realm", "", "realm (default: default_realm of krb5.conf)")
	flag.StringVar(&o.keytab, "keytab", "", "keytab of the service account")
	flag.StringVar(&o.ccache, "ccache", "", "ccache holding the service account's forwardable TGT (kinit -f)")
	flag.StringVar(&o.krb5conf, "krb5conf", os.Getenv("KRB5_CONFIG"), "krb5.conf (default $KRB5_CONFIG, then /etc/krb5.conf)")
	flag.StringVar(&o.impersonate, "impersonate", "", "the user to get a ticket for (sAMAccountName, user@REALM or UPN)")
	flag.StringVar(&o.spn, "spn", "", "the target SPN, e.g. http/mail.corp.example.com")
	flag.StringVar(&o.out, "out", "", "write the tickets to this MIT ccache (mode 0600)")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Second, "for the whole exchange")
	flag.BoolVar(&o.selfOnly, "self", false, "S4U2Self only: the evidence ticket, no S4U2Proxy")
	flag.Parse()
	o.password = os.Getenv("SEGKCD_SVC_PASSWORD")
	os.Exit(run(context.Background(), o, os.Stdout, os.Stderr))
}

func run(ctx context.Context, o options, stdout, stderr io.Writer) int {
	if o.impersonate == "" || (o.spn == "" && !o.selfOnly) {
		fmt.Fprintln(stderr, "s4u: -impersonate and -spn are required")
		return 1
	}
	if o.krb5conf == "" {
		o.krb5conf = "/etc/krb5.conf"
	}
	cfg, err := kerberos.LoadConfig(o.krb5conf)
	if err != nil {
		fmt.Fprintln(stderr, "s4u:", err)
		return 1
	}
	var c *kerberos.Client
	switch {
	case o.ccache != "":
		cc, err := kerberos.LoadCCache(o.ccache)
		if err == nil {
			c, err = kerberos.NewFromCCache(cc, cfg)
		}
		if err != nil {
			fmt.Fprintln(stderr, "s4u: ccache:", err)
			return 1
		}
	case o.keytab != "":
		kt, err := kerberos.LoadKeytab(o.keytab)
		if err != nil {
			fmt.Fprintln(stderr, "s4u: keytab:", err)
			return 1
		}
		c = kerberos.NewWithKeytab(o.user, o.realm, kt, cfg)
	case o.password != "":
		c = kerberos.NewWithPassword(o.user, o.realm, o.password, cfg)
	default:
		fmt.Fprintln(stderr, "s4u: give -keytab, -ccache, or the password in $SEGKCD_SVC_PASSWORD")
		return 1
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	ev, err := c.S4U2Self(ctx, o.impersonate)
	tickets := []*kerberos.Ticket{ev}
	if err == nil && !o.selfOnly {
		var t *kerberos.Ticket
		t, err = c.S4U2Proxy(ctx, ev, o.spn)
		tickets = []*kerberos.Ticket{t, ev}
	}
	if err != nil {
		fmt.Fprintln(stderr, "s4u:", err)
		var ke *kerberos.KDCError
		switch {
		case errors.As(err, &ke), errors.Is(err, kerberos.ErrEvidenceNotForwardable):
			return 2
		case errors.Is(err, kerberos.ErrNoKDC), errors.Is(err, context.DeadlineExceeded):
			return 3
		}
		return 1
	}
	for _, t := range tickets {
		fwd := ""
		if t.Forwardable() {
			fwd = ", forwardable"
		}
		fmt.Fprintf(stdout, "%s: ticket for %s, until %s%s\n", t.ServerName(), t.ClientName(),
			t.EndTime.Local().Format("2006-01-02 15:04:05"), fwd)
	}
	if o.out != "" {
		if err := writeCCache(strings.TrimPrefix(o.out, "FILE:"), tickets); err != nil {
			fmt.Fprintln(stderr, "s4u: write ccache:", err)
			return 1
		}
	}
	return 0
}

// writeCCache writes the tickets through a new file of mode 0600 in the
// target's directory, renamed over the target: an existing file's mode is
// not kept and a symlink at the path is replaced, not followed.
func writeCCache(path string, tickets []*kerberos.Ticket) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".s4u-ccache-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing to remove
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	err = kerberos.WriteCCache(f, tickets...)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
