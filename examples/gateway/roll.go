package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/segkcd/segkcd/deploy"
	"github.com/segkcd/segkcd/examples/internal/siteconfig"
)

// rollConfig is the ASA roll the gateway runs (deploy.Roller): the ASA's
// password is rolled when it is older than every, on every server and
// then in AD. Of several replicas with the same section exactly one rolls:
// the roll is claimed in AD (a compare-and-swap of the ASA's note), and a
// claim older than lease (its replica died mid-roll) is taken over and
// finished with the password it had started.
type rollConfig struct {
	// How to reach AD and the servers, as examples/provision takes it;
	// kdcs and krb5_conf default to the gateway's, realm to its realm.
	siteconfig.AD
	ASA     string              `json:"asa"` // EXCHASA
	Servers []siteconfig.Server `json:"servers"`
	WinRM   siteconfig.WinRM    `json:"winrm"`

	Every    string `json:"every,omitempty"`    // password age that makes a roll due; default 504h (21 days)
	Lease    string `json:"lease,omitempty"`    // how long a claimed roll stays its replica's; default 30m
	Interval string `json:"interval,omitempty"` // between checks; default 1h
	Name     string `json:"name,omitempty"`     // this replica in the journal; default host:pid
	// Replicas names every replica that may claim a roll (each one's
	// name). A claim by anyone else in the ASA's note is overridden, so
	// that whoever may write the note cannot hold rolls off with claims of
	// their own. With it, name must be set, and be one of them.
	Replicas []string `json:"replicas,omitempty"`

	every, lease, interval time.Duration
}

func (r *rollConfig) check(gw *config) error {
	if r.ASA == "" {
		return bad("roll.asa", "required (the ASA's computer name, e.g. EXCHASA)")
	}
	var fe *siteconfig.FieldError
	if err := r.AD.Check(); errors.As(err, &fe) {
		return bad("roll."+fe.Field, "%s", fe.Why)
	}
	if r.BindKeytab != "" {
		if _, err := os.Stat(r.BindKeytab); err != nil {
			return bad("roll.bind_keytab", "%v", err)
		}
	}
	if r.BindPassword.File != "" {
		if _, err := os.Stat(r.BindPassword.File); err != nil {
			return bad("roll.bind_password", "%v", err)
		}
	}
	if len(r.Servers) == 0 {
		return bad("roll.servers", "at least one Exchange server, e.g. [{\"name\": \"CAS1\"}]")
	}
	for i, s := range r.Servers {
		if s.Name == "" || (s.WinRM == "" && r.WinRM.Address == "") {
			return bad(fmt.Sprintf("roll.servers[%d]", i), "a name, and a WinRM address here or in roll.winrm.address")
		}
	}
	switch r.WinRM.Auth {
	case "", "ntlm", "basic", "kerberos":
	default:
		return bad("roll.winrm.auth", "want ntlm, kerberos or basic")
	}
	if len(r.KDCs) == 0 && r.Krb5Conf == "" {
		r.KDCs, r.Krb5Conf = gw.KDCs, gw.Krb5Conf
	}
	if r.Realm == "" {
		r.Realm = gw.Realm
	}
	var err error
	for _, f := range []struct {
		name string
		s    string
		d    *time.Duration
	}{{"roll.every", r.Every, &r.every}, {"roll.lease", r.Lease, &r.lease}, {"roll.interval", r.Interval, &r.interval}} {
		if *f.d, err = parseDuration(f.name, f.s); err != nil {
			return err
		}
	}
	interval, lease := r.interval, r.lease
	if interval == 0 {
		interval = deploy.DefaultInterval
	}
	if lease == 0 {
		lease = deploy.DefaultLease
	}
	if lease < interval/10 {
		return bad("roll.lease", "shorter than a tenth of the interval: a slow roll would be taken over while it runs")
	}
	if len(r.Replicas) > 0 && (r.Name == "" || !slices.Contains(r.Replicas, r.Name)) {
		return bad("roll.name", "with roll.replicas, name this replica, as one of them (a host:pid default changes at each start)")
	}
	if r.Name == "" {
		host, _ := os.Hostname()
		r.Name = host + ":" + strconv.Itoa(os.Getpid())
	}
	return nil
}

// leaseOr and intervalOr are lease and interval, or the Roller's defaults.
func (r *rollConfig) leaseOr() time.Duration {
	if r.lease > 0 {
		return r.lease
	}
	return deploy.DefaultLease
}

func (r *rollConfig) intervalOr() time.Duration {
	if r.interval > 0 {
		return r.interval
	}
	return deploy.DefaultInterval
}

// everyOr is every, or deploy.Roller's default when not set.
func (r *rollConfig) everyOr() time.Duration {
	if r.every > 0 {
		return r.every
	}
	return deploy.DefaultEvery
}

// roller is the deploy.Roller of the roll section and its connections:
// AD and the servers are reached at the first check, and again at each
// check until they answer, so that a gateway started while the DC is down
// serves devices and rolls once it is back. Its state is /v1/roll.
type roller struct {
	c       *rollConfig
	service string // the gateway's service account (the Deployment names it)
	reg     prometheus.Registerer
	log     *slog.Logger
	r       atomic.Pointer[deploy.Roller]

	mu      sync.Mutex
	pending deploy.RollStatus // until connected
}

// deployment reaches AD and the servers.
func (ro *roller) deployment(ctx context.Context) (*deploy.Deployment, func(), error) {
	conn, err := ro.c.AD.Dial(ctx)
	if err != nil {
		return nil, nil, err
	}
	servers, exch, err := ro.c.WinRM.Shells(ro.c.Servers, conn, ro.c.BindUser)
	if err != nil {
		conn.AD.Close()
		return nil, nil, err
	}
	return &deploy.Deployment{AD: conn.AD, Kerberos: conn.Kerberos, ASA: ro.c.ASA, Servers: servers, Exchange: exch,
		ServiceAccount: ro.service}, func() { conn.AD.Close() }, nil
}

func (ro *roller) newRoller(d *deploy.Deployment) *deploy.Roller {
	return &deploy.Roller{Deployment: d, Every: ro.c.every, Lease: ro.c.lease, Interval: ro.c.interval, Name: ro.c.Name,
		Replicas: ro.c.Replicas, Logger: ro.log}
}

// Run connects, then rolls when due until ctx ends.
func (ro *roller) Run(ctx context.Context) {
	retry := time.Minute
	if ro.c.interval > 0 && ro.c.interval < retry {
		retry = ro.c.interval
	}
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		d, closeAD, err := ro.deployment(cctx)
		cancel()
		if err == nil {
			defer closeAD()
			r := ro.newRoller(d)
			if err := r.RegisterMetrics(ro.reg); err != nil {
				ro.log.Error("ASA roll metrics", "error", err.Error())
			}
			ro.r.Store(r)
			r.Run(ctx)
			return
		}
		now := time.Now()
		ro.mu.Lock()
		ro.pending.LastCheck, ro.pending.NextCheck = now, now.Add(retry)
		ro.pending.Failures++
		ro.pending.Result, ro.pending.LastError, ro.pending.LastErrorAt = "cannot reach AD or the servers", err.Error(), now
		ro.pending.Hint = connectHint(err)
		ro.mu.Unlock()
		ro.log.Error("ASA roll: cannot reach AD or the servers; trying again", "error", err.Error(), "hint", connectHint(err),
			"retry", retry.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
	}
}

func connectHint(err error) string {
	var h interface{ Hint() string }
	if errors.As(err, &h) && h.Hint() != "" {
		return "roll section: " + h.Hint()
	}
	return "check roll.ldap_url, roll.ca_file, the bind identity and the WinRM addresses; devices are served meanwhile"
}

// Status is /v1/roll: the Roller's, or what connecting found.
func (ro *roller) Status() any {
	if r := ro.r.Load(); r != nil {
		return r.Status()
	}
	ro.mu.Lock()
	defer ro.mu.Unlock()
	st := ro.pending
	every := ro.c.everyOr()
	st.Replica, st.ASA, st.Every = ro.c.Name, strings.TrimSuffix(ro.c.ASA, "$")+"$", every.String()
	if st.Result == "" {
		st.Result = "connecting to AD and the servers"
	}
	return st
}

// roll checks the roll section: AD binds, the ASA's password age and
// journal, and each server's credential. It changes nothing.
func (k *checker) roll(ctx context.Context) {
	rc := k.c.Roll
	ro := &roller{c: rc, service: k.c.ServiceAccount, log: discardLogger()}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	d, closeAD, err := ro.deployment(ctx)
	how := "password"
	if rc.BindKeytab != "" {
		how = "keytab"
	}
	if err != nil {
		k.line("roll: AD and WinRM", "", err, connectHint(err))
		return
	}
	defer closeAD()
	k.line("roll: AD", fmt.Sprintf("bound to %s (%s) as %s (%s)", d.AD.URL(), d.AD.DomainInfo().DCHostName, rc.BindUser, how), nil, "")
	// The roll's AD connection also reads what cert_directory's would:
	// NTAuth and the service account's types (unless it did), and the ASA's.
	if k.c.CertDirectory == nil {
		if len(k.c.ClientCAFiles) > 0 {
			k.ntauth(ctx, d.AD)
		}
		k.rc4Attributes(ctx, d.AD, k.c.ServiceAccount)
	}
	k.rc4Attributes(ctx, d.AD, rc.ASA+"$")
	check, err := ro.newRoller(d).Check(ctx)
	// One line per DC: reachable and bound, its site, whether it holds the
	// PDC emulator role (where the roll writes), and its view of the ASA.
	for _, v := range check.DCs {
		detail, hint := "reachable and bound; "+v.View(), ""
		switch {
		case v.Err != nil && v.DC.PDC:
			detail = "WARN " + v.View()
			hint = "the roll writes only on the PDC emulator and waits while it is unreachable from here: check the DC and the network first; only if it is gone for good, seize the role on another DC and remove its metadata"
		case v.Err != nil:
			detail = "WARN " + v.View()
			hint = "the other DCs serve devices meanwhile; a roll needs a majority of the writable DCs to answer"
		}
		k.line("roll: DC "+v.DC.DNSHostName+" ("+v.Role()+")", detail, nil, hint)
	}
	if check.PasswordSet.IsZero() && err != nil {
		k.line("roll: ASA", "", err, "roll.asa must name the ASA's computer account, which the bind identity may read")
		return
	}
	every := rc.everyOr()
	age := k.now.Sub(check.PasswordSet).Round(time.Second)
	detail := fmt.Sprintf("%s$ password set %s ago, next roll after %s (every %s)", rc.ASA, age,
		check.Due.UTC().Format(time.RFC3339), every)
	if age > every+24*time.Hour {
		detail = "WARN " + detail + ": overdue"
	}
	k.line("roll: ASA", detail, nil, "a replica rolls at its next check; see GET /v1/roll")
	if err != nil {
		k.line("roll: journal and servers", "", err, connectHint(err))
		return
	}
	switch j := check.Journal; {
	case j.Kind == "":
		k.line("roll: journal", "none yet (the first roll writes it)", nil, "")
	case j.Done:
		k.line("roll: journal", fmt.Sprintf("last roll finished by %s, claimed %s", j.Owner, j.Claimed.UTC().Format(time.RFC3339)), nil, "")
	case len(rc.Replicas) > 0 && !slices.Contains(rc.Replicas, j.Owner):
		k.line("roll: journal", fmt.Sprintf("WARN %s, not one of roll.replicas, claimed a roll at %s that has not finished", j.Owner, j.Claimed.UTC().Format(time.RFC3339)),
			nil, "the next check overrides the claim; find who writes the ASA's note (its info attribute)")
	case age > every+rc.intervalOr()+rc.leaseOr():
		// Due for longer than a check and a lease, and a claim open: a
		// real roll holds its claim at most the lease.
		k.line("roll: journal", "", fmt.Errorf("%s claimed a roll at %s that has not finished, and the password is overdue",
			j.Owner, j.Claimed.UTC().Format(time.RFC3339)),
			"a roll holds its claim at most roll.lease: someone may be rewriting the ASA's note to hold rolls off; list the replicas in roll.replicas, and find who writes the note")
	default:
		k.line("roll: journal", fmt.Sprintf("WARN %s claimed a roll at %s that has not finished", j.Owner, j.Claimed.UTC().Format(time.RFC3339)),
			nil, "a replica finishes it after the lease, with the password it started")
	}
	for _, st := range check.Servers {
		var err error
		if !st.Decrypts() {
			err = errors.New(st.String())
		}
		label := "roll: " + st.Server
		if rc.WinRM.TestHost {
			label += " [TEST HOST: modeled Windows, not a real Exchange]"
		}
		k.line(label, strings.TrimPrefix(st.String(), st.Server+": "), err, "run provision apply (or a roll) to put AD's password on every server")
	}
}
