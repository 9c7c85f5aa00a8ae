// Command provision does the seed procedure of a SEG KCD deployment from a
// JSON file, as desired state (package deploy):
//
//	provision -config provision.json plan    # what would change, step by step; writes nothing
//	provision -config provision.json apply   # make it so; safe to run again after any failure
//	provision -config provision.json verify  # read it all back, prove the chain with a real S4U ticket
//
// The steps, in the seed's order: (1) the Alternate Service Account, AES
// only; (2) the ASA credential on every Exchange server, then in AD; (3)
// the mail SPNs on the ASA; (4) the gateway's service account with
// protocol transition and constrained delegation; (5) IIS on every server.
// Without "asa" it runs single-server mode: the mail SPNs go on the one
// Exchange server's computer account.
//
// Secrets are never in the file or on the command line (ps shows those):
// it names the environment variables or files that hold them. A WinRM
// target marked "test_host" is segkcd's WS-Man test host (a model of
// Windows over plain HTTP), and every line about it says so.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
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
	"github.com/segkcd/segkcd/deploy"
	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/winrs"
)

// config is the JSON file.
type config struct {
	LDAPURL      string `json:"ldap_url"`    // ldaps://dc1.corp.example.com, or ldap:// (StartTLS)
	GCURL        string `json:"gc_url"`      // default: the same host, 3269
	CAFile       string `json:"ca_file"`     // the DC's CA (PEM); default: system roots
	ServerName   string `json:"server_name"` // the name in the DC's certificate, when ldap_url holds an address
	BindUser     string `json:"bind_user"`   // CORP\admin: a domain administrator
	BindPassword secret `json:"bind_password"`

	KDCs     []string `json:"kdcs"`      // host[:port]; default: the DC's host
	Krb5Conf string   `json:"krb5_conf"` // instead of kdcs

	ASA        string   `json:"asa"`        // EXCHASA; empty: single-server mode
	MailHosts  []string `json:"mail_hosts"` // default mail.<domain>
	ShortNames bool     `json:"short_names"`
	Servers    []server `json:"servers"`
	WinRM      winrmCfg `json:"winrm"` // how to reach the servers

	ServiceAccount  string `json:"service_account"` // svc_awseg
	ServicePassword secret `json:"service_password"`
	EWS             bool   `json:"ews"`
	KeepNTLM        bool   `json:"keep_ntlm"`
	ResourceBased   bool   `json:"resource_based"` // RBCD on the ASA instead of msDS-AllowedToDelegateTo
	TestUser        string `json:"test_user"`      // for verify
	Timeout         string `json:"timeout"`        // default 2m
}

// secret names where a secret is: an environment variable or a file.
type secret struct {
	Env  string `json:"env"`
	File string `json:"file"`
}

func (s secret) value(what string) (string, error) {
	switch {
	case s.Env != "":
		v := os.Getenv(s.Env)
		if v == "" {
			return "", fmt.Errorf("%s: $%s is empty", what, s.Env)
		}
		return v, nil
	case s.File != "":
		b, err := os.ReadFile(s.File)
		if err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return "", fmt.Errorf("%s: name an env or a file", what)
}

type server struct {
	Name    string `json:"name"`    // CAS1
	Version string `json:"version"` // optional: 2013, 2016, 2019/SE
	WinRM   string `json:"winrm"`   // host[:port] of its WinRM listener; default: winrm.address
}

type winrmCfg struct {
	Address  string `json:"address"` // host[:port] of the management server's listener
	Auth     string `json:"auth"`    // ntlm (default), kerberos or basic
	User     string `json:"user"`    // default: bind_user
	Password secret `json:"password"`
	TLS      bool   `json:"tls"`     // HTTPS (5986); without it NTLM and Kerberos seal every message
	CAFile   string `json:"ca_file"` // the listener's CA
	TestHost bool   `json:"test_host"`
}

func main() {
	path := flag.String("config", "provision.json", "the deployment, as JSON")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: provision [-config file] plan|apply|verify")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	cfg, err := load(*path)
	if err == nil {
		err = run(context.Background(), os.Stdout, cfg, flag.Arg(0))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "provision:", err)
		var h interface{ Hint() string }
		if errors.As(err, &h) && h.Hint() != "" {
			fmt.Fprintln(os.Stderr, "hint:", h.Hint())
		}
		os.Exit(1)
	}
}

func load(path string) (*config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c config
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

// run does one command and reports on out.
func run(ctx context.Context, out io.Writer, c *config, cmd string) error {
	if cmd != "plan" && cmd != "apply" && cmd != "verify" {
		return fmt.Errorf("unknown command %q: plan, apply or verify", cmd)
	}
	timeout := 2 * time.Minute
	if c.Timeout != "" {
		d, err := time.ParseDuration(c.Timeout)
		if err != nil {
			return fmt.Errorf("timeout: %w", err)
		}
		timeout = d
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d, label, closeAD, err := c.deployment(ctx)
	if err != nil {
		return err
	}
	defer closeAD()
	info := d.AD.DomainInfo()
	fmt.Fprintf(out, "domain %s (%s), DC %s, bound as %s over TLS\n", info.DNSDomain, info.NetBIOSName, info.DCHostName, c.BindUser)
	if d.ASA == "" {
		fmt.Fprintf(out, "single-server mode: the mail SPNs go on %s$, no ASA\n", d.Servers[0].Name)
	}
	switch cmd {
	case "plan":
		p, err := d.Plan(ctx)
		if err != nil {
			return err
		}
		printPlan(out, p, label)
		if n := len(p.Pending()); n > 0 {
			fmt.Fprintf(out, "%d steps to apply\n", n)
		} else {
			fmt.Fprintln(out, "nothing to do")
		}
	case "apply":
		p, err := d.Plan(ctx)
		if err != nil {
			return err
		}
		stage := 0
		d.Progress = func(s deploy.Step, ch segkcd.Change) {
			if s.Stage != stage {
				stage = s.Stage
				fmt.Fprintf(out, "%d. %s%s\n", stage, deploy.StageName(stage), label[stage])
			}
			printChange(out, ch)
		}
		done, err := d.Apply(ctx, p)
		if err != nil {
			return err
		}
		changed := 0
		for _, ch := range done {
			if ch.Changed() {
				changed++
			}
		}
		if changed == 0 {
			fmt.Fprintln(out, "nothing to do: every step is as it should be")
		} else {
			fmt.Fprintf(out, "%d steps made changes\n", changed)
		}
	case "verify":
		r, err := d.Verify(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "every step is as it should be\n%s got a ticket as %s to %s (kvno %d)\n", d.ServiceAccount, r.User, r.SPN, r.KVNO)
		if r.AcceptedAs != "" {
			fmt.Fprintf(out, "the ASA credential the Exchange servers hold accepts it as %s%s\n", r.AcceptedAs, label[deploy.StageCredential])
		} else {
			fmt.Fprintf(out, "single-server mode: only %s holds the key that decrypts it\n", d.Servers[0].Name)
		}
		for _, st := range r.Servers {
			fmt.Fprintf(out, "  %s\n", st)
		}
	}
	return nil
}

func printPlan(out io.Writer, p *deploy.Plan, label map[int]string) {
	stage := 0
	for _, s := range p.Steps {
		if s.Stage != stage {
			stage = s.Stage
			fmt.Fprintf(out, "%d. %s%s\n", stage, deploy.StageName(stage), label[stage])
		}
		printChange(out, s.Change)
	}
}

func printChange(out io.Writer, ch segkcd.Change) {
	fmt.Fprintf(out, "  %-10s %s %s\n", ch.Action, ch.What, ch.Object)
	for _, d := range ch.Details {
		fmt.Fprintf(out, "  %-10s   %s\n", "", d)
	}
}

// deployment builds the deploy.Deployment: the AD connection, the
// administrator's Kerberos client, and a WinRM client per host. label
// marks the stages that run on a test host.
func (c *config) deployment(ctx context.Context) (*deploy.Deployment, map[int]string, func(), error) {
	if c.LDAPURL == "" || c.BindUser == "" || c.ServiceAccount == "" || len(c.Servers) == 0 {
		return nil, nil, nil, errors.New("ldap_url, bind_user, service_account and servers are required")
	}
	bindPW, err := c.BindPassword.value("bind_password")
	if err != nil {
		return nil, nil, nil, err
	}
	svcPW, err := c.ServicePassword.value("service_password")
	if err != nil {
		return nil, nil, nil, err
	}
	tc := &tls.Config{ServerName: c.ServerName}
	if c.CAFile != "" {
		if tc.RootCAs, err = pool(c.CAFile); err != nil {
			return nil, nil, nil, err
		}
	}
	conn, err := ad.Dial(ctx, ad.Config{URL: c.LDAPURL, GCURL: c.GCURL, TLSConfig: tc,
		Bind: ad.SimpleBind{Username: c.BindUser, Password: bindPW}})
	if err != nil {
		return nil, nil, nil, err
	}
	closeAD := func() { conn.Close() }
	fail := func(err error) (*deploy.Deployment, map[int]string, func(), error) {
		closeAD()
		return nil, nil, nil, err
	}
	krb, err := c.kerberos(ctx, conn, bindPW)
	if err != nil {
		return fail(err)
	}
	d := &deploy.Deployment{AD: conn, Kerberos: krb, ASA: c.ASA, MailHosts: c.MailHosts, ShortNames: c.ShortNames,
		ServiceAccount: c.ServiceAccount, ServiceAccountPassword: svcPW, EWS: c.EWS, KeepNTLM: c.KeepNTLM, TestUser: c.TestUser,
		ResourceBased: c.ResourceBased}
	shells := map[string]winrs.Shell{}
	for _, s := range c.Servers {
		addr := s.WinRM
		if addr == "" {
			addr = c.WinRM.Address
		}
		if addr == "" {
			return fail(fmt.Errorf("server %s: no WinRM address (servers[].winrm or winrm.address)", s.Name))
		}
		sh, ok := shells[addr]
		if !ok {
			if sh, err = c.WinRM.shell(addr, c.BindUser, krb); err != nil {
				return fail(fmt.Errorf("server %s: %w", s.Name, err))
			}
			shells[addr] = sh
		}
		d.Servers = append(d.Servers, deploy.Server{Name: s.Name, Version: s.Version, Shell: sh})
	}
	if sh, ok := shells[c.WinRM.Address]; ok {
		d.Exchange = sh // the management shell: the listener named in winrm.address
	} else if c.WinRM.Address != "" {
		if d.Exchange, err = c.WinRM.shell(c.WinRM.Address, c.BindUser, krb); err != nil {
			return fail(err)
		}
	}
	label := map[int]string{}
	if c.WinRM.TestHost {
		for _, st := range []int{deploy.StageCredential, deploy.StageIIS} {
			label[st] = " [TEST HOST: modeled Windows, not a real Exchange]"
		}
	}
	return d, label, closeAD, nil
}

// kerberos logs in as the bind account (its sAMAccountName, which AD
// knows as a principal), for the roll's check and for verify.
func (c *config) kerberos(ctx context.Context, conn *ad.Conn, password string) (*kerberos.Client, error) {
	acct, err := conn.FindAccount(ctx, c.BindUser)
	if err != nil {
		return nil, err
	}
	realm := strings.ToUpper(conn.DomainInfo().DNSDomain)
	if c.Krb5Conf != "" {
		kcfg, err := kerberos.LoadConfig(c.Krb5Conf)
		if err != nil {
			return nil, err
		}
		return kerberos.NewWithPassword(acct.SAMAccountName, realm, password, kcfg), nil
	}
	kdcs := c.KDCs
	if len(kdcs) == 0 {
		u, err := neturl.Parse(c.LDAPURL)
		if err != nil {
			return nil, err
		}
		kdcs = []string{u.Hostname()}
	}
	for i, k := range kdcs {
		if _, _, err := net.SplitHostPort(k); err != nil {
			kdcs[i] = net.JoinHostPort(k, "88")
		}
	}
	kcfg, err := kerberos.NewConfig(realm, kdcs...)
	if err != nil {
		return nil, err
	}
	return kerberos.NewWithPassword(acct.SAMAccountName, realm, password, kcfg), nil
}

// shell is a WinRM client for one listener.
func (w winrmCfg) shell(addr, bindUser string, krb *kerberos.Client) (*winrs.Client, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = addr, ""
	}
	p, _ := strconv.Atoi(port)
	user := w.User
	if user == "" {
		user = bindUser
	}
	cfg := winrs.Config{Host: host, Port: p}
	if w.TLS {
		cfg.TLS = &tls.Config{}
		if w.CAFile != "" {
			if cfg.TLS.RootCAs, err = pool(w.CAFile); err != nil {
				return nil, err
			}
		}
	}
	switch w.Auth {
	case "", "ntlm":
		pw, err := w.Password.value("winrm.password")
		if err != nil {
			return nil, err
		}
		cfg.Auth = winrs.NTLM{User: user, Password: pw}
	case "basic":
		pw, err := w.Password.value("winrm.password")
		if err != nil {
			return nil, err
		}
		cfg.Auth = winrs.Basic{User: user, Password: pw}
	case "kerberos":
		cfg.Auth = winrs.Kerberos{Client: krb}
	default:
		return nil, fmt.Errorf("winrm.auth %q: ntlm, kerberos or basic", w.Auth)
	}
	return winrs.New(cfg)
}

func pool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", file)
	}
	return p, nil
}
