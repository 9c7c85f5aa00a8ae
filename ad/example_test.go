package ad_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/segkcd/segkcd"
	"github.com/segkcd/segkcd/ad"
)

// The AD side of a KCD deployment: the Exchange ASA, its SPN, and the
// gateway's service account with constrained delegation to it. Each step
// says whether it changed anything, so running it twice is safe.
func Example() {
	ctx := context.Background()
	pool := x509.NewCertPool() // the DC's CA
	c, err := ad.Dial(ctx, ad.Config{
		URL:       "ldaps://dc1.corp.example.com",
		TLSConfig: &tls.Config{RootCAs: pool},
		Bind:      ad.SimpleBind{Username: `CORP\admin`, Password: os.Getenv("AD_PASSWORD")},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	const mailSPN = "http/mail.corp.example.com"
	steps := []func() (segkcd.Change, error){
		func() (segkcd.Change, error) {
			return c.CreateComputerAccount(ctx, ad.ComputerAccountRequest{Name: "EXCHASA"})
		},
		func() (segkcd.Change, error) { return c.SetSPN(ctx, "EXCHASA$", mailSPN) },
		func() (segkcd.Change, error) {
			return c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{
				Name: "svc_awseg", Password: os.Getenv("SVC_PASSWORD"), PasswordNeverExpires: true})
		},
		func() (segkcd.Change, error) { return c.SetSPN(ctx, "svc_awseg", "HTTP/svc_awseg") },
		func() (segkcd.Change, error) { return c.SetProtocolTransition(ctx, "svc_awseg", true) },
		func() (segkcd.Change, error) { return c.AddAllowedToDelegateTo(ctx, "svc_awseg", mailSPN) },
	}
	for _, step := range steps {
		ch, err := step()
		var dup *ad.DuplicateSPNError
		if errors.As(err, &dup) {
			log.Fatalf("%s is already on %v", dup.SPN, dup.Holders)
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ch)
	}
}

func ExampleGeneratePassword() {
	// 64 characters from crypto/rand, every character class, never the account name.
	pw, err := ad.GeneratePassword(0, "EXCHASA$")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(pw))
	// Output: 64
}

func ExampleParseDiagnostic() {
	d, ok := ad.ParseDiagnostic("80090308: LdapErr: DSID-0C09041C, comment: AcceptSecurityContext error, data 52e, v4563")
	fmt.Printf("%v %08X %x\n", ok, d.Code, d.Data)
	// Output: true 80090308 52e
}

func ExampleError() {
	// What a caller sees when the DC refuses a password.
	var err error = &ad.Error{Op: "reset password", Object: "CN=EXCHASA,CN=Computers,DC=corp,DC=example,DC=com",
		LDAPCode: 19, Code: 0x52D, Kind: ad.ErrPasswordPolicy}
	var e *ad.Error
	if errors.Is(err, ad.ErrPasswordPolicy) && errors.As(err, &e) {
		fmt.Printf("LDAP %d, AD %08X\n", e.LDAPCode, e.Code)
	}
	// Output: LDAP 19, AD 0000052D
}

func ExampleUAC() {
	flags := ad.UACNormalAccount | ad.UACTrustedToAuthForDelegation
	fmt.Println(flags)
	// Output: 0x1000200 NORMAL_ACCOUNT|TRUSTED_TO_AUTH_FOR_DELEGATION
}
