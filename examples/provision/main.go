// Command provision does the seed procedure of a SEG KCD deployment, in
// its order:
//
//  1. AD: the Exchange Alternate Service Account (a computer account, AES only)
//  2. Exchange: roll the ASA password onto every server, then AD (skipped
//     when every server already holds the ASA credential)
//  3. AD: http/<mail host> on the ASA, with setspn -S duplicate checks
//  4. AD: the gateway's service account, HTTP/<name> on it, protocol
//     transition, and constrained delegation to the mail SPNs
//  5. IIS: Windows authentication (Negotiate, kernel mode, app-pool
//     credentials) on ActiveSync and EWS; the service account in IIS_IUSRS
//
// Steps 2 and 5 run over WinRM when -winrm is given (the password in
// $SEGKCD_WINRM_PASSWORD); -winrm-test-host marks a WS-Man test host (a model
// of Windows, reached over plain HTTP) and says so in every line.
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
	"net"
	neturl "net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/segkcd/segkcd"
	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/exchange"
	"github.com/segkcd/segkcd/iis"
	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/winrs"
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
		winrmAddr  = flag.String("winrm", "", "host:port of the WinRM listener of an Exchange server (steps 2 and 5)")
		winrmUser  = flag.String("winrm-user", "", `WinRM user, DOMAIN\user (default: -bind)`)
		winrmAuth  = flag.String("winrm-auth", "ntlm", "WinRM logon: ntlm (sealed on HTTP, channel-bound on HTTPS) or basic (HTTPS only)")
		testHost   = flag.Bool("winrm-test-host", false, "the WinRM target is segkcd's WS-Man test host (HTTP, labelled output)")
		servers    = flag.String("exchange-servers", "CAS1,CAS2", "Exchange servers that share the ASA credential")
		kdc        = flag.String("kdc", os.Getenv("SEGKCD_KDC"), "host[:port] of a KDC of the domain (default: the host of -url)")
	)
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cfg := config{url: *url, gcURL: *gcURL, caFile: *caFile, serverName: *serverName, bindUser: *bindUser,
		bindPassword: os.Getenv("SEGKCD_BIND_PASSWORD"), asa: *asa, mail: *mail, short: *short,
		svc: *svc, svcPassword: os.Getenv("SEGKCD_SVC_PASSWORD"),
		winrmAddr: *winrmAddr, winrmUser: *winrmUser, winrmAuth: *winrmAuth, winrmPassword: os.Getenv("SEGKCD_WINRM_PASSWORD"),
		testHost: *testHost, servers: strings.Split(*servers, ","), kdc: *kdc}
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
	winrmAddr, winrmUser           string
	winrmAuth                      string // default ntlm
	winrmPassword                  string
	testHost                       bool
	servers                        []string
	kdc                            string
}

// rollIfNeeded rolls the ASA password unless every server already holds
// the password AD has for the ASA as its Latest credential (a ticket to
// the ASA, opened with each server's password, tells). A server left
// mid-roll, or holding a stale credential, gets the roll.
func rollIfNeeded(ctx context.Context, org *exchange.Org, roll exchange.Roll) (segkcd.Change, error) {
	states, err := org.CheckASA(ctx, roll)
	if err != nil {
		return segkcd.Change{}, err
	}
	var stale []string
	for _, st := range states {
		if st.Err != nil {
			return segkcd.Change{}, st.Err
		}
		if !st.LatestIsCurrent {
			stale = append(stale, st.String())
		}
	}
	if len(stale) == 0 {
		return segkcd.Change{Action: segkcd.Unchanged, Object: roll.User}, nil
	}
	if _, err := org.RollASAPassword(ctx, roll); err != nil {
		return segkcd.Change{}, err
	}
	return segkcd.Change{Action: segkcd.Modified, Object: roll.User, Details: append(stale,
		fmt.Sprintf("new password on %s, then reset in AD", strings.Join(roll.Servers, ", ")))}, nil
}

// kerberosClient logs in as the bind account, for the roll's check of
// which password AD holds (a ticket to the ASA).
func kerberosClient(ctx context.Context, c *ad.Conn, cfg config) (*kerberos.Client, error) {
	acct, err := c.FindAccount(ctx, cfg.bindUser)
	if err != nil {
		return nil, err
	}
	kdc := cfg.kdc
	if kdc == "" {
		u, err := neturl.Parse(cfg.url)
		if err != nil {
			return nil, err
		}
		kdc = net.JoinHostPort(u.Hostname(), "88")
	}
	realm := strings.ToUpper(c.DomainInfo().DNSDomain)
	kcfg, err := kerberos.NewConfig(realm, kdc)
	if err != nil {
		return nil, err
	}
	return kerberos.NewWithPassword(acct.SAMAccountName, realm, cfg.bindPassword, kcfg), nil
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
	step := func(name string, ch segkcd.Change, err error) error {
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
	var shell winrs.Shell
	label := ""
	if cfg.winrmAddr != "" {
		host, port, err := net.SplitHostPort(cfg.winrmAddr)
		if err != nil {
			return fmt.Errorf("-winrm: %w", err)
		}
		p, _ := strconv.Atoi(port)
		user := cfg.winrmUser
		if user == "" {
			user = cfg.bindUser
		}
		// The test host speaks plain HTTP: NTLM seals every message there,
		// so nothing travels in clear and AllowUnencrypted stays off.
		wc := winrs.Config{Host: host, Port: p, Auth: winrs.NTLM{User: user, Password: cfg.winrmPassword}}
		if cfg.winrmAuth == "basic" {
			wc.Auth = winrs.Basic{User: user, Password: cfg.winrmPassword}
		}
		if !cfg.testHost {
			wc.TLS = &tls.Config{}
		}
		if shell, err = winrs.New(wc); err != nil {
			return err
		}
		if cfg.testHost {
			label = " [TEST HOST: modeled Windows, not a real Exchange]"
		}
	}
	fmt.Fprintln(out, "2. Exchange: the ASA credential on every server, then in AD"+label)
	if shell == nil {
		fmt.Fprintln(out, "  skipped    no -winrm given (the ASA keeps its random initial password)")
	} else {
		krb, err := kerberosClient(ctx, c, cfg)
		if err != nil {
			return err
		}
		ch, err := rollIfNeeded(ctx, &exchange.Org{Shell: shell},
			exchange.Roll{Servers: cfg.servers, User: info.NetBIOSName + `\` + asaSAM, AD: c, Kerberos: krb})
		if err := step("ASA credential on "+strings.Join(cfg.servers, ", ")+label, ch, err); err != nil {
			return err
		}
	}
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
	fmt.Fprintln(out, "5. IIS: Windows authentication for Kerberos, service account in IIS_IUSRS"+label)
	if shell == nil {
		fmt.Fprintln(out, "  skipped    no -winrm given")
	} else {
		srv := &iis.Server{Shell: shell}
		for _, vdir := range []string{iis.ActiveSync, iis.EWS} {
			ich, err := srv.ConfigureWindowsAuth(ctx, iis.DefaultSite, vdir, iis.WindowsAuthOptions{})
			if err := step("Windows authentication on "+iis.DefaultSite+"/"+vdir+label, ich, err); err != nil {
				return err
			}
		}
		ich, err := srv.AddLocalGroupMember(ctx, iis.IISUsers, info.NetBIOSName+`\`+cfg.svc)
		if err := step(info.NetBIOSName+`\`+cfg.svc+" in "+iis.IISUsers+label, ich, err); err != nil {
			return err
		}
	}
	d, err := c.DelegationInfo(ctx, cfg.svc)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: %s to %s\n", d.SAMAccountName, d.Kind(), strings.Join(d.AllowedToDelegateTo, ", "))
	if changed == 0 {
		fmt.Fprintln(out, "all steps unchanged")
	} else {
		fmt.Fprintf(out, "%d steps made changes\n", changed)
	}
	return nil
}
