package kerberos_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/segkcd/segkcd/kerberos"
)

// A gateway's service account gets alice a ticket to Exchange.
func Example() {
	cfg, err := kerberos.NewConfig("CORP.EXAMPLE.COM", "dc1.corp.example.com", "dc2.corp.example.com")
	if err != nil {
		log.Fatal(err)
	}
	svc := kerberos.NewWithPassword("svc_awseg", "CORP.EXAMPLE.COM", os.Getenv("SVC_PASSWORD"), cfg)
	tkt, err := svc.Impersonate(context.Background(), "alice@corp.example.com", "http/mail.corp.example.com")
	switch {
	case errors.Is(err, kerberos.ErrNotDelegable):
		log.Fatal("add the SPN to msDS-AllowedToDelegateTo of svc_awseg")
	case errors.Is(err, kerberos.ErrEvidenceNotForwardable):
		log.Fatal("svc_awseg needs TRUSTED_TO_AUTH_FOR_DELEGATION, or the user is sensitive")
	case err != nil:
		log.Fatal(err)
	}
	fmt.Println(tkt) // http/mail.corp.example.com@CORP.EXAMPLE.COM for alice@..., until ...
}

// Which account holds a UPN: the KDC resolves it and the PAC says. A UPN's
// prefix is not an account name in Active Directory.
func ExampleClient_Account() {
	cfg, err := kerberos.NewConfig("CORP.EXAMPLE.COM", "dc1.corp.example.com")
	if err != nil {
		log.Fatal(err)
	}
	svc := kerberos.NewWithPassword("svc_awseg", "CORP.EXAMPLE.COM", os.Getenv("SVC_PASSWORD"), cfg)
	acct, err := svc.Account(context.Background(), "j.doe@example.com")
	switch {
	case errors.Is(err, kerberos.ErrClientUnknown):
		log.Fatal("no account holds j.doe@example.com")
	case err != nil:
		log.Fatal(err)
	}
	// Impersonate the account by its name: the ticket's client name is then
	// the sAMAccountName, and its PAC the account's.
	tkt, err := svc.Impersonate(context.Background(), acct.User, "http/mail.corp.example.com")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(acct.Name, acct.SID, tkt.ClientName())
}
