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
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/segkcd/segkcd"
	"github.com/segkcd/segkcd/deploy"
	"github.com/segkcd/segkcd/examples/internal/siteconfig"
)

// config is the JSON file: how to reach AD and the servers
// (siteconfig's fields, shared with the gateway's roll section), and the
// deployment.
type config struct {
	siteconfig.AD

	ASA        string              `json:"asa"`        // EXCHASA; empty: single-server mode
	MailHosts  []string            `json:"mail_hosts"` // default mail.<domain>
	ShortNames bool                `json:"short_names"`
	Servers    []siteconfig.Server `json:"servers"`
	WinRM      siteconfig.WinRM    `json:"winrm"` // how to reach the servers

	ServiceAccount  string            `json:"service_account"` // svc_awseg
	ServicePassword siteconfig.Secret `json:"service_password"`
	EWS             bool              `json:"ews"`
	KeepNTLM        bool              `json:"keep_ntlm"`
	TokenChecking   string            `json:"token_checking,omitempty"` // Extended Protection on the virtual directories: Require (default), Allow, None
	ResourceBased   bool              `json:"resource_based"`           // RBCD on the ASA instead of msDS-AllowedToDelegateTo
	TestUser        string            `json:"test_user"`                // for verify
	Timeout         string            `json:"timeout"`                  // default 2m
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
		printExposed(out, p.Exposed)
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
			fmt.Fprintf(out, "the ASA credential the Exchange servers hold accepts it as %s, bound to a TLS channel with bindings required (Extended Protection)%s\n", r.AcceptedAs, label[deploy.StageCredential])
		} else {
			fmt.Fprintf(out, "single-server mode: only %s holds the key that decrypts it\n", d.Servers[0].Name)
		}
		for _, st := range r.Servers {
			fmt.Fprintf(out, "  %s\n", st)
		}
		// Each DC's view of the ASA: replication lag shows here.
		for _, v := range r.DCs {
			fmt.Fprintf(out, "  DC %s\n", v)
		}
		printExposed(out, r.Exposed)
	}
	return nil
}

// printExposed warns of the accounts the 2026 RC4 cut-off exposes, or
// says there are none.
func printExposed(out io.Writer, exposed []deploy.Exposure) {
	if len(exposed) == 0 {
		fmt.Fprintln(out, "RC4 cut-off (CVE-2026-20833): no account on the path is exposed")
		return
	}
	for _, e := range exposed {
		fmt.Fprintf(out, "WARN RC4 cut-off (CVE-2026-20833): %s\n", e)
	}
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
	if c.ServiceAccount == "" || len(c.Servers) == 0 {
		return nil, nil, nil, errors.New("service_account and servers are required")
	}
	if err := c.AD.Check(); err != nil {
		return nil, nil, nil, err
	}
	svcPW, err := c.ServicePassword.Value("service_password")
	if err != nil {
		return nil, nil, nil, err
	}
	conn, err := c.AD.Dial(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	closeAD := func() { conn.AD.Close() }
	servers, exch, err := c.WinRM.Shells(c.Servers, conn, c.BindUser)
	if err != nil {
		closeAD()
		return nil, nil, nil, err
	}
	d := &deploy.Deployment{AD: conn.AD, Kerberos: conn.Kerberos, ASA: c.ASA, MailHosts: c.MailHosts, ShortNames: c.ShortNames,
		Servers: servers, Exchange: exch, ServiceAccount: c.ServiceAccount, ServiceAccountPassword: svcPW, EWS: c.EWS,
		KeepNTLM: c.KeepNTLM, TokenChecking: c.TokenChecking, TestUser: c.TestUser, ResourceBased: c.ResourceBased}
	label := map[int]string{}
	if c.WinRM.TestHost {
		for _, st := range []int{deploy.StageCredential, deploy.StageIIS} {
			label[st] = " [TEST HOST: modeled Windows, not a real Exchange]"
		}
	}
	return d, label, closeAD, nil
}
