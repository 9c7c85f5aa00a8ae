package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/segkcd/segkcd"
	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/exchange"
	"github.com/segkcd/segkcd/iis"
	"github.com/segkcd/segkcd/internal/redact"
	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/winrs"
)

// Deployment is the whole seed procedure as one desired state. Its zero
// values are the seed's defaults; AD, Kerberos, Servers and
// ServiceAccount are required.
type Deployment struct {
	// AD is a connection bound as a domain administrator, over TLS (the
	// ASA's and the service account's passwords travel on it).
	AD *ad.Conn
	// Kerberos is a Kerberos client of the same administrator (or any
	// account of the domain): the roll asks it for a ticket to the ASA to
	// tell which password AD holds, and Verify makes the gateway's client
	// from it (kerberos.Client.ForAccount).
	Kerberos *kerberos.Client

	// ASA is the computer name of the Alternate Service Account that
	// every Exchange server shares ("EXCHASA"; a trailing $ is optional).
	// Empty is single-server mode, the seed's "only one EAS or CAS server"
	// path: no ASA, the mail SPNs go on the one server's computer account,
	// which decrypts tickets with its own key.
	ASA string
	// MailHosts are the names devices reach Exchange by; each gets
	// http/<host> on the ASA (or the server) and in the gateway's
	// constrained delegation. Empty means mail.<AD DNS domain>.
	MailHosts []string
	// ShortNames also registers and delegates to http/<first label> of
	// each mail host, as ADUC's delegation tab shows both.
	ShortNames bool
	// Servers are the Exchange servers of the mail namespace; in
	// single-server mode exactly one.
	Servers []Server
	// Exchange is the management shell that runs the Exchange cmdlets (an
	// Exchange server's WinRM); nil means Servers[0].Shell.
	Exchange winrs.Shell

	// ServiceAccount is the gateway's account ("svc_awseg"), created with
	// ServiceAccountPassword (never changed on an existing account), which
	// Verify also logs in with.
	ServiceAccount         string
	ServiceAccountPassword string
	// DelegateTo are more SPNs the gateway may delegate to, beside the
	// mail SPNs (another namespace's http/..., registered elsewhere).
	DelegateTo []string
	// ResourceBased sets up resource-based constrained delegation (RBCD)
	// instead of the classic kind: the account that holds the mail SPNs
	// (the ASA, or the server in single-server mode) names the gateway's
	// account in msDS-AllowedToActOnBehalfOfOtherIdentity, and the gateway's
	// account gets no msDS-AllowedToDelegateTo (DelegateTo must be empty).
	// Windows DCs take that over LDAP; a Samba DC only from samba-tool
	// delegation add-principal run on the DC, so Apply stops at that step
	// with ad.ErrSystemOnly and says so. Protocol transition is set in both
	// modes: Samba refuses non-forwardable evidence even for RBCD.
	ResourceBased bool
	// EWS also sets up the EWS virtual directory, for a gateway that
	// proxies EWS; ActiveSync is always set up.
	EWS bool
	// KeepNTLM keeps NTLM after Negotiate on the virtual directories.
	KeepNTLM bool
	// TokenChecking is the Extended Protection the virtual directories get
	// (IIS windowsAuthentication/extendedProtection tokenChecking, flags
	// None): "Require" when empty, as Exchange 2019 CU14 and later set it
	// and the gateway's bound tokens pass it; "Allow" or "None" only for
	// other clients of the directories that cannot bind.
	TokenChecking string

	// TestUser is the user Verify asks a ticket for ("alice"): a mailbox
	// user who may be delegated.
	TestUser string
	// Progress, when set, is called after each step Apply makes, with
	// what the step did.
	Progress func(Step, segkcd.Change)
}

// Server is an Exchange server of the deployment.
type Server struct {
	// Name is the server as Exchange names it ("CAS1"); its computer
	// account is Name$.
	Name string
	// Version, when set, is the release the server must report: "2013",
	// "2016" or "2019/SE" (exchange.Version.Product). Plan fails on
	// another.
	Version string
	// Shell reaches the server's IIS over WinRM; nil means the
	// Deployment's Exchange shell.
	Shell winrs.Shell
}

// Format prints the deployment without the service account's password.
func (d Deployment) Format(f fmt.State, verb rune) {
	type plain Deployment
	m := plain(d)
	m.ServiceAccountPassword = redact.String(m.ServiceAccountPassword)
	redact.Format(f, verb, "deploy.Deployment", m)
}

// Stages of the seed procedure, in its order.
const (
	StageASA        = 1 // the ASA computer account (AES only)
	StageCredential = 2 // the ASA credential on every Exchange server, then in AD
	StageMailSPNs   = 3 // the mail SPNs on the ASA (or the server)
	StageGateway    = 4 // the gateway's service account with constrained delegation
	StageIIS        = 5 // Windows authentication on the virtual directories, IIS_IUSRS
)

// StageName names a stage for output.
func StageName(stage int) string {
	switch stage {
	case StageASA:
		return "Alternate Service Account"
	case StageCredential:
		return "ASA credential on every Exchange server, then in AD"
	case StageMailSPNs:
		return "mail SPNs"
	case StageGateway:
		return "gateway service account with constrained delegation"
	case StageIIS:
		return "IIS: Windows authentication for Kerberos, Extended Protection, service account in IIS_IUSRS"
	}
	return "stage " + strconv.Itoa(stage)
}

// Step is one difference Plan found, or one thing it found already right:
// the Change says what Apply will do (Unchanged: nothing).
type Step struct {
	Stage int
	segkcd.Change
	apply func(ctx context.Context) (segkcd.Change, error)
}

// Plan is the steps of a deployment in the seed's order.
type Plan struct {
	Steps []Step
	// Exposed are the accounts on the gateway's path (the service account,
	// the ASA or in single-server mode the mail SPN's holder) that exist
	// and whose encryption types leave them exposed to the 2026 RC4
	// cut-off. The plan's steps set AES on the accounts deploy manages;
	// their keys are AES once their password is set again (the roll, the
	// service account's password).
	Exposed []Exposure
}

// Exposure is an account that Windows' RC4 cut-off (CVE-2026-20833,
// KB5073381: AES-only tickets from April 2026, no way back from July 2026)
// breaks or may break, and why, each reason with its fix.
type Exposure struct {
	Account string
	Reasons []string
}

// String is "account: reason; reason".
func (e Exposure) String() string { return e.Account + ": " + strings.Join(e.Reasons, "; ") }

// rc4Exposure reads the path's accounts that exist and reports those that
// msDS-SupportedEncryptionTypes leaves exposed (ad.Account.RC4Exposure).
func (d *Deployment) rc4Exposure(ctx context.Context) ([]Exposure, error) {
	names := []string{d.ServiceAccount, d.spnHolder()}
	var out []Exposure
	for _, n := range names {
		a, err := d.AD.FindAccount(ctx, n)
		if errors.Is(err, ad.ErrNotFound) {
			continue // deploy creates it, AES only
		}
		if err != nil {
			return nil, err
		}
		if why := a.RC4Exposure(); len(why) > 0 {
			out = append(out, Exposure{Account: a.SAMAccountName, Reasons: why})
		}
	}
	return out, nil
}

// Pending is the steps that have something to do.
func (p *Plan) Pending() []Step {
	var out []Step
	for _, s := range p.Steps {
		if s.Changed() {
			out = append(out, s)
		}
	}
	return out
}

// String renders the plan, one line per step, then the exposed accounts.
func (p *Plan) String() string {
	var b strings.Builder
	for _, s := range p.Steps {
		fmt.Fprintf(&b, "%d. %s\n", s.Stage, s.Change)
	}
	for _, e := range p.Exposed {
		fmt.Fprintf(&b, "RC4 exposure: %s\n", e)
	}
	return b.String()
}

// StepError is a Plan or Apply that stopped at a step. Run Apply (or Plan
// and Apply) again to finish: every step is idempotent.
type StepError struct {
	Stage int
	What  string // the step's operation
	Err   error
}

// Error says the stage, the step and the cause.
func (e *StepError) Error() string {
	return fmt.Sprintf("deploy: step %d (%s), %s: %v", e.Stage, StageName(e.Stage), e.What, e.Err)
}

// Unwrap returns the cause: an *ad.Error, *exchange.Error,
// *exchange.RollError, *iis.Error, *winrs.Error or a context's error.
func (e *StepError) Unwrap() error { return e.Err }

// Hint is the cause's advice for the administrator, and what to do next.
func (e *StepError) Hint() string {
	var h interface{ Hint() string }
	if errors.As(e.Err, &h) {
		if s := h.Hint(); s != "" {
			return s + "; then run apply again"
		}
	}
	return "run apply again: steps already made are left as they are"
}

// ErrInvalid is a Deployment that cannot be planned as it is.
var ErrInvalid = errors.New("deploy: invalid deployment")

func (d *Deployment) check() error {
	switch {
	case d.AD == nil:
		return fmt.Errorf("%w: no AD connection", ErrInvalid)
	case d.Kerberos == nil && d.ASA != "":
		return fmt.Errorf("%w: no Kerberos client (the roll needs a ticket to the ASA)", ErrInvalid)
	case len(d.Servers) == 0:
		return fmt.Errorf("%w: no Exchange servers", ErrInvalid)
	case d.ASA == "" && len(d.Servers) != 1:
		return fmt.Errorf("%w: single-server mode (no ASA) with %d servers: every server but one would fail to decrypt tickets", ErrInvalid, len(d.Servers))
	case d.ServiceAccount == "":
		return fmt.Errorf("%w: no service account", ErrInvalid)
	case d.extendedProtection().Check() != nil:
		return fmt.Errorf("%w: TokenChecking %q: Require (the default), Allow or None", ErrInvalid, d.TokenChecking)
	case d.shell() == nil:
		return fmt.Errorf("%w: no Exchange management shell", ErrInvalid)
	case d.ResourceBased && len(d.DelegateTo) > 0:
		return fmt.Errorf("%w: DelegateTo is classic delegation; with ResourceBased each target names the gateway itself", ErrInvalid)
	}
	return nil
}

func (d *Deployment) shell() winrs.Shell {
	if d.Exchange != nil {
		return d.Exchange
	}
	return d.Servers[0].Shell
}

func (d *Deployment) org() *exchange.Org { return &exchange.Org{Shell: d.shell()} }

func (d *Deployment) asaSAM() string { return strings.TrimSuffix(d.ASA, "$") + "$" }

// spnHolder is the account that holds the mail SPNs: the ASA, or in
// single-server mode the server's computer account.
func (d *Deployment) spnHolder() string {
	if d.ASA == "" {
		return d.Servers[0].Name + "$"
	}
	return d.asaSAM()
}

// MailSPNs are the SPNs the mail hosts need, in order.
func (d *Deployment) MailSPNs() []string {
	hosts := d.MailHosts
	if len(hosts) == 0 {
		hosts = []string{"mail." + d.AD.DomainInfo().DNSDomain}
	}
	var spns []string
	for _, h := range hosts {
		spns = append(spns, "http/"+h)
		if label, _, ok := strings.Cut(h, "."); ok && d.ShortNames {
			spns = append(spns, "http/"+label)
		}
	}
	return spns
}

func (d *Deployment) roll() exchange.Roll {
	var names []string
	for _, s := range d.Servers {
		names = append(names, s.Name)
	}
	return exchange.Roll{Servers: names, User: d.AD.DomainInfo().NetBIOSName + `\` + d.asaSAM(), AD: d.AD, Kerberos: d.Kerberos}
}

func (d *Deployment) vdirs() []string {
	if d.EWS {
		return []string{iis.ActiveSync, iis.EWS}
	}
	return []string{iis.ActiveSync}
}

func (d *Deployment) iisServer(s Server) *iis.Server {
	sh := s.Shell
	if sh == nil {
		sh = d.shell()
	}
	return &iis.Server{Shell: sh, Name: s.Name}
}

func (d *Deployment) gatewayMember() string {
	return d.AD.DomainInfo().NetBIOSName + `\` + d.ServiceAccount
}

// Plan reads AD, every Exchange server and every IIS and returns the
// steps of the seed procedure with what each would change, writing
// nothing (a dry run). A step that cannot be read fails the plan with a
// *StepError.
func (d *Deployment) Plan(ctx context.Context) (*Plan, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	p := &Plan{}
	add := func(stage int, ch segkcd.Change, apply func(ctx context.Context) (segkcd.Change, error)) {
		p.Steps = append(p.Steps, Step{Stage: stage, Change: ch, apply: apply})
	}
	failed := func(stage int, what string, err error) error {
		return &StepError{Stage: stage, What: what, Err: err}
	}
	domain := d.AD.DomainInfo().DNSDomain

	// 1. The ASA, AES only (CreateComputerAccount's defaults).
	asaExists := false
	if d.ASA != "" {
		const what = "create computer account"
		ch := segkcd.Change{What: what, Object: d.asaSAM(), Action: segkcd.Unchanged}
		acct, err := d.AD.FindAccount(ctx, d.asaSAM())
		switch {
		case errors.Is(err, ad.ErrNotFound):
			ch.Action, ch.Details = segkcd.Created, []string{"AES only, member of Domain Computers"}
		case err != nil:
			return nil, failed(StageASA, what, err)
		case !acct.IsComputer():
			return nil, failed(StageASA, what, fmt.Errorf("%s exists and is not a computer account", acct.SAMAccountName))
		default:
			asaExists = true
			ch.Object = acct.DN
			host := strings.ToLower(strings.TrimSuffix(d.ASA, "$")) + "." + domain
			if !strings.EqualFold(acct.DNSHostName, host) {
				ch.Details = append(ch.Details, fmt.Sprintf("dNSHostName: %q -> %q", acct.DNSHostName, host))
			}
			if acct.SupportedEncryptionTypes != ad.EncAES {
				ch.Details = append(ch.Details, fmt.Sprintf("msDS-SupportedEncryptionTypes: %v -> %v", acct.SupportedEncryptionTypes, ad.EncAES))
			}
			if len(ch.Details) > 0 {
				ch.Action = segkcd.Modified
			}
		}
		add(StageASA, ch, func(ctx context.Context) (segkcd.Change, error) {
			return d.AD.CreateComputerAccount(ctx, ad.ComputerAccountRequest{Name: strings.TrimSuffix(d.ASA, "$"),
				Description: "Exchange Alternate Service Account (Kerberos for the mail namespace)"})
		})
	}

	// 2. Every server's version, and the ASA credential on each.
	org := d.org()
	var versions []string
	for _, s := range d.Servers {
		v, err := org.Version(ctx, s.Name)
		if err != nil {
			return nil, failed(StageCredential, "read version", err)
		}
		if s.Version != "" && s.Version != v.Product() {
			return nil, failed(StageCredential, "read version", fmt.Errorf("%w: %s runs Exchange %s (%s), not %s", ErrInvalid, s.Name, v.Product(), v.Raw, s.Version))
		}
		versions = append(versions, fmt.Sprintf("%s: Exchange %s (%s)", s.Name, v.Product(), v.Raw))
	}
	if d.ASA != "" {
		const what = "roll ASA credential"
		roll := d.roll()
		ch := segkcd.Change{What: what, Object: strings.Join(roll.Servers, ", "), Action: segkcd.Unchanged}
		if !asaExists {
			ch.Action, ch.Details = segkcd.Modified, []string{"new password on every server, then in AD (after the ASA is created)"}
		} else {
			stale, err := staleServers(ctx, org, roll)
			if err != nil {
				return nil, failed(StageCredential, what, err)
			}
			if len(stale) > 0 {
				ch.Action = segkcd.Modified
				ch.Details = append(stale, "new password on every server, then in AD")
			}
		}
		ch.Details = append(versions, ch.Details...)
		add(StageCredential, ch, func(ctx context.Context) (segkcd.Change, error) { return d.rollIfNeeded(ctx) })
	}

	// 3. The mail SPNs on the ASA, or on the server in single-server mode.
	holder := d.spnHolder()
	have, err := d.spns(ctx, holder)
	if err != nil && !(errors.Is(err, ad.ErrNotFound) && !asaExists && d.ASA != "") {
		return nil, failed(StageMailSPNs, "add SPN", err)
	}
	for _, spn := range d.MailSPNs() {
		ch := segkcd.Change{What: "add SPN", Object: holder, Action: segkcd.Unchanged, Details: []string{"servicePrincipalName " + spn}}
		if !containsFold(have, spn) {
			ch.Action, ch.Details = segkcd.Modified, []string{"servicePrincipalName += " + spn}
		}
		add(StageMailSPNs, ch, func(ctx context.Context) (segkcd.Change, error) { return d.AD.SetSPN(ctx, holder, spn) })
	}

	// 4. The gateway's service account, its SPN, protocol transition and
	// the delegation to the mail SPNs.
	svc, err := d.AD.FindAccount(ctx, d.ServiceAccount)
	if err != nil && !errors.Is(err, ad.ErrNotFound) {
		return nil, failed(StageGateway, "create service account", err)
	}
	{
		ch := segkcd.Change{What: "create service account", Object: d.ServiceAccount, Action: segkcd.Unchanged}
		if svc == nil {
			ch.Action, ch.Details = segkcd.Created, []string{"AES only, password never expires"}
		} else {
			ch.Object = svc.DN
			upn := d.ServiceAccount + "@" + domain
			if !strings.EqualFold(svc.UserPrincipalName, upn) {
				ch.Details = append(ch.Details, fmt.Sprintf("userPrincipalName: %q -> %q", svc.UserPrincipalName, upn))
			}
			if !svc.UserAccountControl.Has(ad.UACDontExpirePassword) {
				ch.Details = append(ch.Details, "userAccountControl += DONT_EXPIRE_PASSWORD")
			}
			if svc.SupportedEncryptionTypes != ad.EncAES {
				ch.Details = append(ch.Details, fmt.Sprintf("msDS-SupportedEncryptionTypes: %v -> %v", svc.SupportedEncryptionTypes, ad.EncAES))
			}
			if len(ch.Details) > 0 {
				ch.Action = segkcd.Modified
			}
		}
		add(StageGateway, ch, func(ctx context.Context) (segkcd.Change, error) {
			return d.AD.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: d.ServiceAccount, Password: d.ServiceAccountPassword,
				PasswordNeverExpires: true, Description: "Secure Email Gateway: KCD to Exchange"})
		})
	}
	var svcSPNs, svcTargets []string
	var svcUAC ad.UAC
	if svc != nil {
		svcSPNs, svcTargets, svcUAC = svc.SPNs, svc.AllowedToDelegateTo, svc.UserAccountControl
	}
	gwSPN := "HTTP/" + d.ServiceAccount
	{
		ch := segkcd.Change{What: "add SPN", Object: d.ServiceAccount, Action: segkcd.Unchanged, Details: []string{"servicePrincipalName " + gwSPN}}
		if !containsFold(svcSPNs, gwSPN) {
			ch.Action, ch.Details = segkcd.Modified, []string{"servicePrincipalName += " + gwSPN}
		}
		add(StageGateway, ch, func(ctx context.Context) (segkcd.Change, error) { return d.AD.SetSPN(ctx, d.ServiceAccount, gwSPN) })
	}
	{
		ch := segkcd.Change{What: "set account flags", Object: d.ServiceAccount, Action: segkcd.Unchanged, Details: []string{"TRUSTED_TO_AUTH_FOR_DELEGATION"}}
		if !svcUAC.Has(ad.UACTrustedToAuthForDelegation) {
			ch.Action, ch.Details = segkcd.Modified, []string{"userAccountControl += TRUSTED_TO_AUTH_FOR_DELEGATION"}
		}
		add(StageGateway, ch, func(ctx context.Context) (segkcd.Change, error) {
			return d.AD.SetProtocolTransition(ctx, d.ServiceAccount, true)
		})
	}
	if d.ResourceBased {
		const what = "add resource-based delegation"
		// The holder may not exist yet (the ASA, planned above).
		principals, err := d.AD.ResourceDelegation(ctx, holder)
		if err != nil && !(errors.Is(err, ad.ErrNotFound) && !asaExists && d.ASA != "") {
			return nil, failed(StageGateway, what, err)
		}
		ch := segkcd.Change{What: what, Object: holder, Action: segkcd.Unchanged,
			Details: []string{"msDS-AllowedToActOnBehalfOfOtherIdentity " + d.ServiceAccount}}
		if !containsFold(principals, d.ServiceAccount) {
			ch.Action, ch.Details = segkcd.Modified, []string{"msDS-AllowedToActOnBehalfOfOtherIdentity += " + d.ServiceAccount}
		}
		add(StageGateway, ch, func(ctx context.Context) (segkcd.Change, error) {
			return d.AD.AddResourceDelegation(ctx, holder, d.ServiceAccount)
		})
	} else {
		spns := append(d.MailSPNs(), d.DelegateTo...)
		ch := segkcd.Change{What: "add delegation targets", Object: d.ServiceAccount, Action: segkcd.Unchanged,
			Details: []string{"msDS-AllowedToDelegateTo " + strings.Join(spns, ", ")}}
		var missing []string
		for _, spn := range spns {
			if !containsFold(svcTargets, spn) {
				missing = append(missing, spn)
			}
		}
		if len(missing) > 0 {
			ch.Action, ch.Details = segkcd.Modified, []string{"msDS-AllowedToDelegateTo += " + strings.Join(missing, ", ")}
		}
		add(StageGateway, ch, func(ctx context.Context) (segkcd.Change, error) {
			return d.AD.AddAllowedToDelegateTo(ctx, d.ServiceAccount, spns...)
		})
	}

	// 5. IIS on every server: Windows authentication, and the gateway's
	// account in IIS_IUSRS.
	want := iis.WindowsAuthOptions{KeepNTLM: d.KeepNTLM}
	for _, s := range d.Servers {
		srv := d.iisServer(s)
		for _, vdir := range d.vdirs() {
			const what = "configure Windows authentication"
			w, err := srv.WindowsAuth(ctx, iis.DefaultSite, vdir)
			if err != nil {
				return nil, failed(StageIIS, what, err)
			}
			ch := segkcd.Change{What: what, Object: s.Name + ": " + iis.DefaultSite + "/" + vdir, Action: segkcd.Unchanged}
			if diff := w.Diff(want.Want()); len(diff) > 0 {
				ch.Action, ch.Details = segkcd.Modified, diff
			}
			add(StageIIS, ch, func(ctx context.Context) (segkcd.Change, error) {
				return srv.ConfigureWindowsAuth(ctx, iis.DefaultSite, vdir, want)
			})
			const epWhat = "configure Extended Protection"
			ep, err := srv.ExtendedProtection(ctx, iis.DefaultSite, vdir)
			if err != nil {
				return nil, failed(StageIIS, epWhat, err)
			}
			wantEP := d.extendedProtection()
			ch = segkcd.Change{What: epWhat, Object: s.Name + ": " + iis.DefaultSite + "/" + vdir, Action: segkcd.Unchanged,
				Details: []string{"tokenChecking " + wantEP.TokenChecking}}
			if diff := ep.Diff(wantEP); len(diff) > 0 {
				ch.Action, ch.Details = segkcd.Modified, diff
			}
			add(StageIIS, ch, func(ctx context.Context) (segkcd.Change, error) {
				return srv.ConfigureExtendedProtection(ctx, iis.DefaultSite, vdir, wantEP)
			})
		}
		const what = "add group member"
		members, err := srv.LocalGroupMembers(ctx, iis.IISUsers)
		if err != nil {
			return nil, failed(StageIIS, what, err)
		}
		member := d.gatewayMember()
		ch := segkcd.Change{What: what, Object: s.Name + ": " + iis.IISUsers, Action: segkcd.Unchanged, Details: []string{"member " + member}}
		if !containsFold(members, member) {
			ch.Action, ch.Details = segkcd.Modified, []string{"member += " + member}
		}
		add(StageIIS, ch, func(ctx context.Context) (segkcd.Change, error) {
			return srv.AddLocalGroupMember(ctx, iis.IISUsers, member)
		})
	}
	exposed, err := d.rc4Exposure(ctx)
	if err != nil {
		return nil, failed(StageGateway, "read encryption types", err)
	}
	p.Exposed = exposed
	return p, nil
}

// Apply makes the plan's pending steps, in order, calling Progress after
// each. It stops at the first failure with a *StepError and returns what
// it made so far. Every step is idempotent and checks again what it
// writes, so Apply (or a new Plan and Apply) is safe to run again after
// any failure, a cancelled context or a crash.
func (d *Deployment) Apply(ctx context.Context, p *Plan) ([]segkcd.Change, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	var done []segkcd.Change
	for _, s := range p.Steps {
		if !s.Changed() {
			continue
		}
		if err := ctx.Err(); err != nil {
			return done, &StepError{Stage: s.Stage, What: s.What, Err: err}
		}
		ch, err := s.apply(ctx)
		if err != nil {
			var dup *ad.DuplicateSPNError
			if errors.As(err, &dup) {
				err = fmt.Errorf("%w (remove it from %s first)", err, strings.Join(dup.Holders, ", "))
			}
			return done, &StepError{Stage: s.Stage, What: s.What, Err: err}
		}
		done = append(done, ch)
		if d.Progress != nil {
			d.Progress(s, ch)
		}
	}
	return done, nil
}

// rollIfNeeded rolls the ASA password unless every server already holds
// the password AD has as its Latest credential. A server left mid-roll,
// or holding a stale credential, gets the roll (which adopts an unfinished
// roll's password). Like the Roller's, the roll reads and writes on the
// PDC emulator, and asks its KDC; an ASA just created on another DC is
// waited for there (30 s at most).
func (d *Deployment) rollIfNeeded(ctx context.Context) (segkcd.Change, error) {
	d, _, err := d.atPDC(ctx)
	if err != nil {
		return segkcd.Change{}, err
	}
	defer d.AD.Close()
	if err := d.replicated(ctx, d.asaSAM(), 30*time.Second); err != nil {
		return segkcd.Change{}, err
	}
	org, roll := d.org(), d.roll()
	const what = "roll ASA credential"
	stale, err := staleServers(ctx, org, roll)
	if err != nil {
		return segkcd.Change{}, err
	}
	ch := segkcd.Change{What: what, Object: strings.Join(roll.Servers, ", "), Action: segkcd.Unchanged}
	if len(stale) == 0 {
		return ch, nil
	}
	// Claimed in the note as a Roller claims, so that an apply and a
	// gateway's Roller never roll at once.
	claim, release, err := d.claimForApply(ctx)
	if err != nil {
		return segkcd.Change{}, err
	}
	res, err := org.RollASAPassword(ctx, roll)
	if res != nil {
		claim.Roll = res.Journal
	}
	release(claim, err == nil)
	if err != nil {
		return segkcd.Change{}, err
	}
	ch.Action = segkcd.Modified
	ch.Details = append(stale, "new password on "+strings.Join(roll.Servers, ", ")+", then reset in AD")
	return ch, nil
}

// ErrRollInProgress is a roll claimed by a Roller (a gateway replica)
// that has not finished: Apply leaves the ASA's credential to it, and
// says to apply again later.
var ErrRollInProgress = errors.New("deploy: a roll of the ASA's password is in progress")

// claimForApply claims the roll in the ASA's note, on d's DC (the PDC
// emulator), for Apply. A fresh unfinished claim of a Roller stops it with
// ErrRollInProgress; an unfinished claim of an earlier apply (which
// failed) is taken over. release records the roll's journal, done or not
// (a Roller finishes an unfinished one after its lease).
func (d *Deployment) claimForApply(ctx context.Context) (Journal, func(Journal, bool), error) {
	sam := d.asaSAM()
	note, err := d.AD.ReadNote(ctx, sam)
	if err != nil {
		return Journal{}, nil, err
	}
	j, err := ParseJournal(note)
	if err != nil {
		return Journal{}, nil, fmt.Errorf("%w (%s's %s attribute); clear it to let the roll claim it", err, sam, ad.NoteAttribute)
	}
	now := time.Now()
	if a, open := j.open(now, DefaultLease); open && !strings.HasPrefix(j.Owner, "apply ") {
		return Journal{}, nil, fmt.Errorf("%w: %s claimed it %s ago; apply again once it has finished (a claim is honoured for %s)",
			ErrRollInProgress, j.Owner, a.Round(time.Second), DefaultLease)
	}
	host, _ := os.Hostname()
	claim := Journal{Kind: journalKind, Owner: "apply " + host + ":" + strconv.Itoa(os.Getpid()), Claimed: now}
	cur, err := marshal(claim)
	if err != nil {
		return Journal{}, nil, err
	}
	if _, err := d.AD.SwapNote(ctx, sam, note, cur); err != nil {
		if errors.Is(err, ad.ErrConflict) {
			return Journal{}, nil, fmt.Errorf("%w: another claim was written first", ErrRollInProgress)
		}
		return Journal{}, nil, err
	}
	release := func(j Journal, done bool) {
		j.Done = done
		// Unrecorded, an unfinished claim is finished by a Roller after its lease.
		_ = d.recordJournal(ctx, cur, j)
	}
	return claim, release, nil
}

// replicated waits until d's DC has the account sam (made on another DC,
// it reaches this one by replication), for at most wait.
func (d *Deployment) replicated(ctx context.Context, sam string, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		_, err := d.AD.FindAccount(ctx, sam)
		if !errors.Is(err, ad.ErrNotFound) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("deploy: %s has not reached %s by replication within %s: %w", sam, d.AD.DomainInfo().DCHostName, wait, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// staleServers describes each server whose Latest credential is not the
// password AD holds for the ASA (the servers a roll must reach).
func staleServers(ctx context.Context, org *exchange.Org, roll exchange.Roll) ([]string, error) {
	states, err := org.CheckASA(ctx, roll)
	if err != nil {
		return nil, err
	}
	var stale []string
	for _, st := range states {
		if st.Err != nil {
			return nil, st.Err
		}
		if !st.LatestIsCurrent {
			stale = append(stale, st.String())
		}
	}
	return stale, nil
}

// spns lists an account's SPNs.
func (d *Deployment) spns(ctx context.Context, account string) ([]string, error) {
	a, err := d.AD.FindAccount(ctx, account)
	if err != nil {
		return nil, err
	}
	return a.SPNs, nil
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// extendedProtection is what the virtual directories get: TokenChecking,
// Require when empty, and no flags.
func (d *Deployment) extendedProtection() iis.ExtendedProtection {
	tc := d.TokenChecking
	if tc == "" {
		tc = "Require"
	}
	return iis.ExtendedProtection{TokenChecking: tc, Flags: "None"}
}
