package deploy_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/segkcd/segkcd"
	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/deploy"
	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/seg"
	"github.com/segkcd/segkcd/winrs"
)

// The seed procedure for two Client Access servers: plan (a dry run),
// apply with progress, verify with a real ticket.
func Example() {
	ctx := context.Background()
	pw := os.Getenv("ADMIN_PASSWORD")
	dc, err := ad.Dial(ctx, ad.Config{URL: "ldaps://dc1.corp.example.com",
		Bind: ad.SimpleBind{Username: `CORP\admin`, Password: pw}})
	if err != nil {
		log.Fatal(err)
	}
	defer dc.Close()
	kcfg, err := kerberos.NewConfig("CORP.EXAMPLE.COM", "dc1.corp.example.com:88")
	if err != nil {
		log.Fatal(err)
	}
	var servers []deploy.Server
	for _, name := range []string{"CAS1", "CAS2"} {
		sh, err := winrs.New(winrs.Config{Host: name + ".corp.example.com", TLS: &tls.Config{},
			Auth: winrs.NTLM{User: `CORP\admin`, Password: pw}})
		if err != nil {
			log.Fatal(err)
		}
		servers = append(servers, deploy.Server{Name: name, Version: "2019/SE", Shell: sh})
	}
	d := &deploy.Deployment{
		AD: dc, Kerberos: kerberos.NewWithPassword("admin", "CORP.EXAMPLE.COM", pw, kcfg),
		ASA: "EXCHASA", MailHosts: []string{"mail.corp.example.com"}, Servers: servers,
		ServiceAccount: "svc_awseg", ServiceAccountPassword: os.Getenv("SVC_PASSWORD"), TestUser: "alice",
		Progress: func(s deploy.Step, ch segkcd.Change) { fmt.Println(s.Stage, ch) },
	}
	p, err := d.Plan(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(p)
	if _, err := d.Apply(ctx, p); err != nil {
		log.Fatal(err) // a *deploy.StepError: fix what its Hint says, and apply again
	}
	r, err := d.Verify(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.User, "accepted as", r.AcceptedAs)
}

// Every replica of an MDM backend runs a Roller; one of them rolls the
// ASA's password every 21 days. Its state goes to Prometheus and to an
// admin endpoint (seg.Admin's Roll hook serves it as GET /v1/roll).
func ExampleRoller() {
	var d *deploy.Deployment // as in the package example
	r := &deploy.Roller{Deployment: d, Every: 21 * 24 * time.Hour}
	if err := r.RegisterMetrics(prometheus.DefaultRegisterer); err != nil {
		log.Fatal(err)
	}
	go r.Run(context.Background())
	admin := &seg.Admin{Roll: func() any { return r.Status() }}
	_ = admin
}

// A roll's state before its first check: nothing known yet but the
// replica, the ASA and the schedule.
func ExampleRoller_Status() {
	r := &deploy.Roller{Deployment: &deploy.Deployment{ASA: "EXCHASA"}, Name: "gw-1", Every: 21 * 24 * time.Hour}
	st := r.Status()
	fmt.Println(st.Replica, st.ASA, st.Every, st.LastCheck.IsZero(), st.OK)
	// Output: gw-1 EXCHASA$ 504h0m0s true false
}

// The SPNs a deployment registers and delegates to.
func ExampleDeployment_MailSPNs() {
	d := &deploy.Deployment{MailHosts: []string{"mail.corp.example.com", "eas.corp.example.com"}, ShortNames: true}
	fmt.Println(d.MailSPNs())
	// Output: [http/mail.corp.example.com http/mail http/eas.corp.example.com http/eas]
}

// A roll journal as the Roller keeps it in the ASA's note; anything else
// there is left alone.
func ExampleParseJournal() {
	j, err := deploy.ParseJournal(`{"segkcd":"asa-roll","owner":"gw-2:4711","claimed":"2026-11-25T10:00:00Z","done":true}`)
	fmt.Println(j.Owner, j.Done, err)
	_, err = deploy.ParseJournal("Do not delete: ticket #4711")
	fmt.Println(err)
	// Output:
	// gw-2:4711 true <nil>
	// deploy: the ASA's note is not a roll journal: 27 characters of something else
}
