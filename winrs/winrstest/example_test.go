package winrstest_test

import (
	"context"
	"fmt"

	"github.com/segkcd/segkcd/exchange"
	"github.com/segkcd/segkcd/iis"
	"github.com/segkcd/segkcd/winrs"
	"github.com/segkcd/segkcd/winrs/winrstest"
)

// A modeled Exchange/IIS host behind an HTTPS WinRM listener that maps a
// client certificate to its administrator; iis configures it over WinRM.
func ExampleStartWith() {
	pki, _ := winrstest.NewPKI()
	tlsConfig, _ := pki.ServerTLS()
	srv, err := winrstest.StartWith(winrstest.NewHost("cas1"), winrstest.Options{TLS: tlsConfig,
		CertificateUsers: map[string]string{"admin@corp.example": `CORP\admin`}})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	cert, _ := pki.ClientCert("admin@corp.example")

	sh, err := winrs.New(winrs.Config{Host: "127.0.0.1", Port: srv.Port(), TLS: pki.ClientTLS(),
		Auth: winrs.Certificate{Certificate: cert}})
	if err != nil {
		panic(err)
	}
	members, err := (&iis.Server{Shell: sh}).LocalGroupMembers(context.Background(), iis.IISUsers)
	fmt.Println(members, err)
	fmt.Println(srv.Logons()[0])
	// Output:
	// [NT AUTHORITY\IUSR] <nil>
	// certificate:CORP\admin
}

// A backend that embeds exchange tests against a modeled organisation:
// two Client Access servers, reached over WinRM with sealed NTLM.
func ExampleHost_AddExchangeServer() {
	h := winrstest.NewHost("cas1")
	h.AddExchangeServer("CAS1", winrstest.Exchange2019)
	h.AddExchangeServer("CAS2", winrstest.Exchange2016)
	srv, err := winrstest.StartWith(h, winrstest.Options{User: `CORP\admin`, Password: "Adm1n-pw!"})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	sh, err := winrs.New(srv.ClientConfig())
	if err != nil {
		panic(err)
	}
	org := &exchange.Org{Shell: sh}
	ctx := context.Background()
	ch, err := org.SetASA(ctx, "CAS1", `CORP\EXCHASA$`, "a-long-random-Passw0rd!")
	fmt.Println(ch.Action, ch.Object, err)
	ch, err = org.CopyASA(ctx, "CAS1", "CAS2")
	fmt.Println(ch.Action, ch.Object, err)
	st, _ := org.ASAStatus(ctx, "CAS2")
	fmt.Println(st.Latest.UserName)
	// Output:
	// modified CAS1 <nil>
	// modified CAS2 <nil>
	// CORP\EXCHASA$
}
