package kerberos_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net/http"
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

// A Negotiate header bound to the TLS connection it goes on, as IIS with
// Extended Protection requires: the binding is the tls-server-end-point
// hash of the certificate the server showed on that connection.
func ExampleNegotiateHeaderBound() {
	cfg, err := kerberos.NewConfig("CORP.EXAMPLE.COM", "dc1.corp.example.com")
	if err != nil {
		log.Fatal(err)
	}
	svc := kerberos.NewWithPassword("svc_awseg", "CORP.EXAMPLE.COM", os.Getenv("SVC_PASSWORD"), cfg)
	tkt, err := svc.Impersonate(context.Background(), "alice", "http/mail.corp.example.com")
	if err != nil {
		log.Fatal(err)
	}
	conn, err := tls.Dial("tcp", "mail.corp.example.com:443", &tls.Config{MinVersion: tls.VersionTLS12})
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	cb, err := kerberos.TLSServerEndPoint(conn.ConnectionState().PeerCertificates[0])
	if err != nil {
		log.Fatal(err) // an Ed25519 certificate has no binding
	}
	h, err := kerberos.NegotiateHeaderBound(tkt, cb)
	if err != nil {
		log.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, "https://mail.corp.example.com/Microsoft-Server-ActiveSync", nil)
	req.Header.Set("Authorization", h)
	_ = req.Write(conn) // on that connection, and no other
}
