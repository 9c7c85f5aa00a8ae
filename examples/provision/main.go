// Command provision does the Active Directory steps of a SEG KCD deployment
// with the ad package, in the order of the seed procedure:
//
//  1. the Exchange Alternate Service Account (a computer account, AES only)
//  2. (Exchange: push the ASA credential to every server — not yet in segkcd)
//  3. http/<mail host> on the ASA, with setspn -S duplicate checks
//  4. the gateway's service account, HTTP/<name> on it, protocol transition,
//     and constrained delegation to the mail SPNs
//
// Every step prints whether it created, modified or left things unchanged,
// so running it twice shows an untouched directory.
//
// Passwords come from the environment only (never flags: ps shows those):
// SEGKCD_BIND_PASSWORD for the bind, SEGKCD_SVC_PASSWORD for the service
// account. Other settings default from SEGKCD_* variables, which
// scripts/lab sets for the local lab.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/segkcd/segkcd/ad"
)

func main() {
	var (
		url        = flag.String("url", os.Getenv("SEGKCD_LDAP_URL"), "DC URL, ldaps:// or ldap:// (StartTLS)")
		gcURL      = flag.String("gc", os.Getenv("SEGKCD_GC_URL"), "global catalog URL (default: same host, 3269)")
		caFile     = flag.String("ca", os.Getenv("SEGKCD_CA_FILE"), "PEM file of the CA that signed the DC's certificate (default: system roots)")
		serverName = flag.String("server-name", os.Getenv("SEGKCD_SERVER_NAME"), "name in the DC's certificate, when -url holds an address")
		bindUser   = flag.String("bind", os.Getenv("SEGKCD_BIND_USER"), `bind account, DOMAIN\user or UPN (password: $SEGKCD_BIND_PASSWORD)`)
		asa        = flag.String("asa", "EXCHASA", "computer name of the Exchange Alternate Service Account")
		mail       = flag.String("mail", "", "mail host name clients use, e.g. mail.corp.example.com (default: mail.<domain>)")
		short      = flag.Bool("short-spn", true, "also register and delegate to http/<first label of -mail>, as ADUC does")
		svc        = flag.String("svc", "svc_awseg", "the gateway's service account (password: $SEGKCD_SVC_PASSWORD)")
		timeout    = flag.Duration("timeout", 2*time.Minute, "for the whole run")
	)
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cfg := config{url: *url, gcURL: *gcURL, caFile: *caFile, serverName: *serverName, bindUser: *bindUser,
		bindPassword: os.Getenv("SEGKCD_BIND_PASSWORD"), asa: *asa, mail: *mail, short: *short,
		svc: *svc, svcPassword: os.Getenv("SEGKCD_SVC_PASSWORD")}
	if err := run(ctx, os.Stdout, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "provision:", err)
		os.Exit(1)
	}
}

type config struct {
	url, gcURL, caFile, serverName string
	bindUser, bindPassword         string
	asa, mail                      string
	short                          bool
	svc, svcPassword               string
}

// run does the steps and reports each on out.
func run(ctx context.Context, out io.Writer, cfg config) error {
	if cfg.url == "" || cfg.bindUser == "" {
		return errors.New("-url and -bind are required (or SEGKCD_LDAP_URL and SEGKCD_BIND_USER)")
	}
	tc := &tls.Config{ServerName: cfg.serverName}
	if cfg.caFile != "" {
		pem, err := os.ReadFile(cfg.caFile)
		if err != nil {
			return err
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("no certificate in %s", cfg.caFile)
		}
	}
	c, err := ad.Dial(ctx, ad.Config{
		URL: cfg.url, GCURL: cfg.gcURL, TLSConfig: tc,
		Bind: ad.SimpleBind{Username: cfg.bindUser, Password: cfg.bindPassword},
	})
	if err != nil {
		return err
	}
	defer c.Close()
	info := c.DomainInfo()
	fmt.Fprintf(out, "domain %s (%s), DC %s, bound as %s over TLS\n", info.DNSDomain, info.NetBIOSName, info.DCHostName, cfg.bindUser)

	mail := cfg.mail
	if mail == "" {
		mail = "mail." + info.DNSDomain
	}
	spns := []string{"http/" + mail}
	if label, _, ok := strings.Cut(mail, "."); ok && cfg.short {
		spns = append(spns, "http/"+label)
	}
	asaSAM := strings.TrimSuffix(cfg.asa, "$") + "$"

	changed := 0
	step := func(name string, ch ad.Change, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if ch.Changed() {
			changed++
		}
		fmt.Fprintf(out, "  %-10s %s\n", ch.Action, name)
		for _, d := range ch.Details {
			fmt.Fprintf(out, "  %-10s   %s\n", "", d)
		}
		return nil
	}

	fmt.Fprintln(out, "1. Alternate Service Account")
	ch, err := c.CreateComputerAccount(ctx, ad.ComputerAccountRequest{
		Name:        cfg.asa,
		Description: "Exchange Alternate Service Account (Kerberos for the mail namespace)",
	})
	if err := step("computer "+asaSAM+", AES only, Domain Computers", ch, err); err != nil {
		return err
	}
	fmt.Fprintln(out, "2. Exchange servers: give every CAS the ASA credential (not yet automated; the lab ASA has a random password)")
	fmt.Fprintln(out, "3. Mail SPNs on the ASA")
	for _, spn := range spns {
		ch, err := c.SetSPN(ctx, asaSAM, spn)
		var dup *ad.DuplicateSPNError
		if errors.As(err, &dup) {
			return fmt.Errorf("%s is already registered on %s: remove it there first", spn, strings.Join(dup.Holders, ", "))
		}
		if err := step("SPN "+spn+" on "+asaSAM, ch, err); err != nil {
			return err
		}
	}
	fmt.Fprintln(out, "4. Gateway service account with constrained delegation")
	ch, err = c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{
		Name: cfg.svc, Password: cfg.svcPassword, PasswordNeverExpires: true,
		Description: "Secure Email Gateway: KCD to Exchange",
	})
	if err := step("user "+cfg.svc, ch, err); err != nil {
		return err
	}
	ch, err = c.SetSPN(ctx, cfg.svc, "HTTP/"+cfg.svc)
	if err := step("SPN HTTP/"+cfg.svc+" on "+cfg.svc, ch, err); err != nil {
		return err
	}
	ch, err = c.SetProtocolTransition(ctx, cfg.svc, true)
	if err := step("TRUSTED_TO_AUTH_FOR_DELEGATION on "+cfg.svc, ch, err); err != nil {
		return err
	}
	ch, err = c.AddAllowedToDelegateTo(ctx, cfg.svc, spns...)
	if err := step("msDS-AllowedToDelegateTo "+strings.Join(spns, ", "), ch, err); err != nil {
		return err
	}
	d, err := c.DelegationInfo(ctx, cfg.svc)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: %s to %s\n", d.SAMAccountName, d.Kind(), strings.Join(d.AllowedToDelegateTo, ", "))
	if changed == 0 {
		fmt.Fprintln(out, "all steps unchanged")
	} else {
		fmt.Fprintf(out, "%d steps changed the directory\n", changed)
	}
	return nil
}
