package deploy_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segkcd/segkcd"
	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/deploy"
	"github.com/segkcd/segkcd/exchange"
	"github.com/segkcd/segkcd/iis"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/winrs"
	"github.com/segkcd/segkcd/winrs/winrstest"
)

var theLab lab.Shared

func TestMain(m *testing.M) {
	code := theLab.Run(m)
	twoDCs.Close()
	os.Exit(code)
}

// env is one deployment on the shared lab, with names of its own: two
// Exchange servers (CAS1 2019, CAS2 2016), each its own WS-Man test host
// (CAS1's also runs the organisation's cmdlets).
type env struct {
	l     *lab.Lab
	d     *deploy.Deployment
	hosts []*winrstest.Server
}

func newEnv(t *testing.T, tag string) *env {
	t.Helper()
	l := theLab.Get(t)
	c, err := l.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	kcfg, err := kerberos.LoadConfig(l.Krb5Conf)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{l: l}
	servers := e.startHosts(t)
	servers[0].Version, servers[1].Version = "2019/SE", "2016"
	e.d = &deploy.Deployment{
		AD: c, Kerberos: kerberos.NewWithPassword(l.AdminUser, l.Realm, l.AdminPassword, kcfg),
		ASA: "ASA" + strings.ToUpper(tag), MailHosts: []string{"mail-" + tag + "." + l.DNSDomain}, ShortNames: false,
		Servers: servers, ServiceAccount: "svc_" + tag, ServiceAccountPassword: "Gw-" + tag + "-Passw0rd!",
		EWS: true, TestUser: "alice",
	}
	return e
}

// startHosts starts the two Exchange servers' WS-Man test hosts (CAS1's
// also runs the organisation's cmdlets) and returns them as servers.
func (e *env) startHosts(t *testing.T) []deploy.Server {
	t.Helper()
	var servers []deploy.Server
	for i := range 2 {
		name := fmt.Sprintf("CAS%d", i+1)
		h := winrstest.NewHost(strings.ToLower(name))
		if i == 0 {
			h.AddExchangeServer("CAS1", winrstest.Exchange2019)
			h.AddExchangeServer("CAS2", winrstest.Exchange2016)
		}
		ts := winrstest.StartTest(t, h)
		sh, err := winrs.New(ts.ClientConfig())
		if err != nil {
			t.Fatal(err)
		}
		e.hosts = append(e.hosts, ts)
		servers = append(servers, deploy.Server{Name: name, Shell: sh})
	}
	return servers
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustPlan(t *testing.T, d *deploy.Deployment) *deploy.Plan {
	t.Helper()
	p, err := d.Plan(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The whole procedure on a fresh domain: the plan lists every step in the
// seed's order and writes nothing; Apply makes them, reporting each;
// the next plan has nothing to do; Verify proves the chain; and
// samba-tool, Samba's own view, shows the delegation.
func TestPlanApplyVerify(t *testing.T) {
	e := newEnv(t, "pav")
	e.d.DelegateTo = []string{"http/owa-pav." + e.l.DNSDomain}
	ctx := ctxT(t)
	p := mustPlan(t, e.d)
	var stages []int
	for _, s := range p.Steps {
		if !s.Changed() {
			t.Errorf("fresh domain, yet %s is unchanged", s.Change)
		}
		stages = append(stages, s.Stage)
	}
	if fmt.Sprint(stages) != "[1 2 3 4 4 4 4 5 5 5 5 5 5 5 5 5 5]" {
		t.Fatalf("stages %v\n%s", stages, p)
	}
	if !strings.Contains(p.Steps[1].Change.String(), "CAS2: Exchange 2016") {
		t.Errorf("the roll step does not list the versions: %s", p.Steps[1].Change)
	}
	// A dry run: nothing in AD, nothing on the hosts.
	if _, err := e.d.AD.FindAccount(ctx, e.d.ASA+"$"); !errors.Is(err, ad.ErrNotFound) {
		t.Fatalf("Plan created the ASA: %v", err)
	}
	if len(e.hosts[0].Host.ASA("CAS1")) != 0 || e.hosts[1].Host.IIS("Default Web Site/EWS").AppPoolCredentials {
		t.Fatal("Plan changed a host")
	}

	var progress []string
	e.d.Progress = func(s deploy.Step, ch segkcd.Change) {
		progress = append(progress, fmt.Sprint(s.Stage, " ", ch.Action))
	}
	done, err := e.d.Apply(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != len(p.Steps) || len(progress) != len(p.Steps) || progress[0] != "1 created" {
		t.Fatalf("applied %d of %d, progress %v", len(done), len(p.Steps), progress)
	}
	if pending := mustPlan(t, e.d).Pending(); len(pending) != 0 {
		t.Fatalf("after apply, still pending: %v", pending)
	}
	r, err := e.d.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.AcceptedAs != "alice@"+e.l.Realm || r.User != "alice@"+e.l.Realm || len(r.Servers) != 2 {
		t.Fatalf("report %+v", r)
	}
	// Independent views: samba-tool's delegation, each host's IIS.
	out, err := e.l.SambaTool(ctx, "delegation", "show", e.d.ServiceAccount)
	if err != nil || !strings.Contains(out, "http/mail-pav."+e.l.DNSDomain) || !strings.Contains(out, "http/owa-pav."+e.l.DNSDomain) {
		t.Fatalf("samba-tool delegation show: %s %v", out, err)
	}
	for _, h := range e.hosts {
		a := h.Host.IIS("Default Web Site/Microsoft-Server-ActiveSync")
		if a.Basic || !a.KernelMode || !a.AppPoolCredentials || strings.Join(a.Providers, ",") != "Negotiate" || a.TokenChecking != "Require" {
			t.Fatalf("IIS %+v", a)
		}
		if m := h.Host.Members(iis.IISUsers); !strings.EqualFold(m[len(m)-1], e.l.Domain+`\svc_pav`) {
			t.Fatalf("IIS_IUSRS %v", m)
		}
	}
}

// Apply interrupted before each step in turn (the context cancelled as a
// crash would stop it) leaves a state from which a new Plan and Apply
// finish the deployment, and then nothing is left to do and Verify holds.
func TestApplyAfterFailureAtEachStep(t *testing.T) {
	for k := 0; k < 17; k++ {
		t.Run(fmt.Sprint("before step ", k+1), func(t *testing.T) {
			e := newEnv(t, fmt.Sprintf("f%d", k))
			ctx := ctxT(t)
			p := mustPlan(t, e.d)
			if n := len(p.Pending()); n != 17 {
				t.Fatalf("%d steps pending on a fresh domain", n)
			}
			actx, cancel := context.WithCancel(ctx)
			made := 0
			e.d.Progress = func(deploy.Step, segkcd.Change) {
				if made++; made == k {
					cancel()
				}
			}
			if k == 0 {
				cancel()
			}
			_, err := e.d.Apply(actx, p)
			var se *deploy.StepError
			if !errors.As(err, &se) || !errors.Is(err, context.Canceled) || se.Hint() == "" {
				t.Fatalf("interrupted apply: %v", err)
			}
			e.d.Progress = nil
			p = mustPlan(t, e.d)
			if n := len(p.Pending()); n != 17-k {
				t.Fatalf("after %d steps, %d pending:\n%s", k, n, p)
			}
			if _, err := e.d.Apply(ctx, p); err != nil {
				t.Fatal(err)
			}
			if n := len(mustPlan(t, e.d).Pending()); n != 0 {
				t.Fatalf("%d still pending", n)
			}
			if _, err := e.d.Verify(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Failures inside steps, as real hosts produce them (once each): the
// roll's first push fails, then CAS2's IIS configuration is locked
// half-way. Each stops Apply with the step and the cause; the next Apply
// goes on from there.
func TestApplyAfterFailuresInsideSteps(t *testing.T) {
	e := newEnv(t, "fin")
	ctx := ctxT(t)
	e.hosts[0].Host.FailOn("set-clientaccessservice", errors.New("Set-ClientAccessService: The operation couldn't be performed because CAS2 is in maintenance."))
	_, err := e.d.Apply(ctx, mustPlan(t, e.d))
	var se *deploy.StepError
	var re *exchange.RollError
	if !errors.As(err, &se) || se.Stage != deploy.StageCredential || !errors.As(err, &re) {
		t.Fatalf("roll failure: %v", err)
	}
	e.hosts[1].Host.FailOn("add-webconfigurationproperty", errors.New("Add-WebConfigurationProperty: Filename: applicationHost.config is locked"))
	_, err = e.d.Apply(ctx, mustPlan(t, e.d))
	var ie *iis.Error
	if !errors.As(err, &se) || se.Stage != deploy.StageIIS || !errors.As(err, &ie) || ie.Server != "CAS2" {
		t.Fatalf("IIS failure: %v", err)
	}
	if _, err := e.d.Apply(ctx, mustPlan(t, e.d)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.Verify(ctx); err != nil {
		t.Fatal(err)
	}
}

// Single-server mode: no ASA, no roll; the mail SPN goes on the server's
// computer account, and a keytab of that account (exported by samba-tool,
// as only the server itself would hold it) accepts the gateway's ticket.
func TestSingleServer(t *testing.T) {
	e := newEnv(t, "one")
	ctx := ctxT(t)
	e.d.ASA = ""
	e.d.Servers = e.d.Servers[:1]
	e.d.Servers[0].Name = "CASONE"
	e.hosts[0].Host.AddExchangeServer("CASONE", winrstest.Exchange2019)
	e.d.Servers[0].Version = ""
	// The server's computer account exists, as joining the domain made it.
	if _, err := e.d.AD.CreateComputerAccount(ctx, ad.ComputerAccountRequest{Name: "CASONE"}); err != nil {
		t.Fatal(err)
	}
	p := mustPlan(t, e.d)
	for _, s := range p.Steps {
		if s.Stage == deploy.StageASA || s.Stage == deploy.StageCredential {
			t.Fatalf("single-server plan has %s", s.Change)
		}
	}
	if p.Steps[0].Object != "CASONE$" {
		t.Fatalf("mail SPN on %s", p.Steps[0].Object)
	}
	if _, err := e.d.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	r, err := e.d.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.AcceptedAs != "" || len(r.Exposed) != 0 {
		t.Fatalf("single-server Verify claims acceptance, or exposure: %+v", r)
	}
	// The server's account, joined long ago, still allowing RC4: Verify
	// holds (its keys are AES) and reports it exposed to the cut-off.
	if _, err := e.d.AD.SetSupportedEncryptionTypes(ctx, "CASONE$", ad.EncRC4HMAC|ad.EncAES); err != nil {
		t.Fatal(err)
	}
	if r, err := e.d.Verify(ctx); err != nil || len(r.Exposed) != 1 || !strings.EqualFold(r.Exposed[0].Account, "CASONE$") ||
		!strings.Contains(r.Exposed[0].String(), "set it to AES (24)") {
		t.Fatalf("Verify, the SPN holder allowing RC4: %v %+v", err, r)
	}
	kt, err := e.l.ExportKeytab(ctx, "CASONE$")
	if err != nil {
		t.Fatal(err)
	}
	svc := e.d.Kerberos.ForAccount(e.d.ServiceAccount, e.d.ServiceAccountPassword)
	tk, err := svc.Impersonate(ctx, "alice", "http/mail-one."+e.l.DNSDomain)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := kerberos.NegotiateHeader(tk)
	if id, err := (&kerberos.Acceptor{Keytab: kt, Principal: "CASONE$"}).Accept(h); err != nil || id.User != "alice" {
		t.Fatalf("the server's own key does not accept: %v", err)
	}
	// Several servers without an ASA would leave all but one unable to decrypt.
	e.d.Servers = append(e.d.Servers, deploy.Server{Name: "CAS2"})
	if _, err := e.d.Plan(ctx); !errors.Is(err, deploy.ErrInvalid) {
		t.Fatalf("single-server mode with two servers: %v", err)
	}
}

// A server that reports another release than the deployment says stops
// the plan before anything is read further.
func TestPlanChecksVersions(t *testing.T) {
	e := newEnv(t, "ver")
	e.d.Servers[1].Version = "2019/SE"
	_, err := e.d.Plan(ctxT(t))
	var se *deploy.StepError
	if !errors.As(err, &se) || !errors.Is(err, deploy.ErrInvalid) || !strings.Contains(err.Error(), "2016") {
		t.Fatalf("wrong version: %v", err)
	}
}

// Resource-based delegation as the mode: the plan puts the gateway's
// account in the ASA's msDS-AllowedToActOnBehalfOfOtherIdentity instead of
// msDS-AllowedToDelegateTo. Samba takes that attribute only from
// samba-tool on the DC, so Apply stops there with ad.ErrSystemOnly and
// says so; done as the hint says, the next Apply finishes, and Verify's
// S4U ticket goes through RBCD alone.
func TestResourceBased(t *testing.T) {
	e := newEnv(t, "rb")
	e.d.ResourceBased = true
	ctx := ctxT(t)
	p := mustPlan(t, e.d)
	var whats []string
	for _, s := range p.Steps {
		if s.Stage == deploy.StageGateway {
			whats = append(whats, s.What)
		}
	}
	if fmt.Sprint(whats) != "[create service account add SPN set account flags add resource-based delegation]" {
		t.Fatalf("stage 4 in RBCD mode: %v", whats)
	}
	_, err := e.d.Apply(ctx, p)
	var se *deploy.StepError
	if !errors.As(err, &se) || se.Stage != deploy.StageGateway || !errors.Is(err, ad.ErrSystemOnly) || !strings.Contains(se.Hint(), "samba-tool delegation add-principal") {
		t.Fatalf("RBCD write on Samba: %v", err)
	}
	if out, err := e.l.SambaTool(ctx, "delegation", "add-principal", e.d.ASA+"$", e.d.ServiceAccount); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := e.d.Apply(ctx, mustPlan(t, e.d)); err != nil {
		t.Fatal(err)
	}
	if n := len(mustPlan(t, e.d).Pending()); n != 0 {
		t.Fatalf("%d pending", n)
	}
	svc, err := e.d.AD.DelegationInfo(ctx, e.d.ServiceAccount)
	if err != nil || len(svc.AllowedToDelegateTo) != 0 || !svc.ProtocolTransition {
		t.Fatalf("the gateway's account in RBCD mode: %+v %v", svc, err)
	}
	r, err := e.d.Verify(ctx)
	if err != nil || r.AcceptedAs != "alice@"+e.l.Realm {
		t.Fatalf("verify through RBCD: %+v %v", r, err)
	}
	e.d.DelegateTo = []string{"http/x"}
	if _, err := e.d.Plan(ctx); !errors.Is(err, deploy.ErrInvalid) {
		t.Fatalf("DelegateTo with RBCD: %v", err)
	}
}

// Single-server mode with RBCD: the gateway's account goes on the
// server's own computer account; with samba-tool's write in place (Samba
// takes it only from there), the plan is empty and Verify holds.
func TestSingleServerResourceBased(t *testing.T) {
	e := newEnv(t, "onerb")
	ctx := ctxT(t)
	e.d.ASA, e.d.ResourceBased = "", true
	e.d.Servers = e.d.Servers[:1]
	e.d.Servers[0].Name, e.d.Servers[0].Version = "CASRB", ""
	e.hosts[0].Host.AddExchangeServer("CASRB", winrstest.Exchange2019)
	if _, err := e.d.AD.CreateComputerAccount(ctx, ad.ComputerAccountRequest{Name: "CASRB"}); err != nil {
		t.Fatal(err)
	}
	p := mustPlan(t, e.d)
	var rbcd *deploy.Step
	for i, s := range p.Steps {
		if s.What == "add resource-based delegation" {
			rbcd = &p.Steps[i]
		}
	}
	if rbcd == nil || rbcd.Object != "CASRB$" {
		t.Fatalf("no RBCD step on the server's account:\n%s", p)
	}
	if _, err := e.d.Apply(ctx, p); !errors.Is(err, ad.ErrSystemOnly) {
		t.Fatalf("apply: %v", err)
	}
	if out, err := e.l.SambaTool(ctx, "delegation", "add-principal", "CASRB$", e.d.ServiceAccount); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := e.d.Apply(ctx, mustPlan(t, e.d)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.Verify(ctx); err != nil {
		t.Fatal(err)
	}
}

// An existing service account that allows RC4 is reported exposed to the
// 2026 cut-off by Plan, with the fix; Apply sets it to AES, and then
// neither Plan nor Verify reports anything.
func TestRC4Exposure(t *testing.T) {
	e := newEnv(t, "rc4")
	ctx := ctxT(t)
	if _, err := e.d.AD.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: e.d.ServiceAccount, Password: e.d.ServiceAccountPassword,
		EncryptionTypes: ad.EncRC4HMAC | ad.EncAES}); err != nil {
		t.Fatal(err)
	}
	p := mustPlan(t, e.d)
	if len(p.Exposed) != 1 || !strings.EqualFold(p.Exposed[0].Account, e.d.ServiceAccount) ||
		!strings.Contains(p.Exposed[0].String(), "set it to AES (24)") || !strings.Contains(p.String(), "RC4 exposure: svc_rc4") {
		t.Fatalf("exposed: %v\n%s", p.Exposed, p)
	}
	if _, err := e.d.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	if p := mustPlan(t, e.d); len(p.Exposed) != 0 {
		t.Errorf("after apply: %v", p.Exposed)
	}
	r, err := e.d.Verify(ctx)
	if err != nil || len(r.Exposed) != 0 {
		t.Fatalf("verify: %v, exposed %v", err, r)
	}
}
