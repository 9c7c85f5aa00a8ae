package wsmantest_test

import (
	"context"
	"fmt"

	"github.com/segkcd/segkcd/iis"
	"github.com/segkcd/segkcd/internal/wsmantest"
)

// A modeled Exchange/IIS host behind an HTTPS WinRM listener that maps a
// client certificate to its administrator; iis configures it over WinRM.
func ExampleStartWith() {
	pki, _ := wsmantest.NewPKI()
	tlsConfig, _ := pki.ServerTLS()
	srv, err := wsmantest.StartWith(wsmantest.NewHost("cas1"), wsmantest.Options{TLS: tlsConfig,
		CertificateUsers: map[string]string{"admin@corp.example": `CORP\admin`}})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	cert, key, _ := pki.ClientCert("admin@corp.example")

	sh, err := iis.NewWinRMShell(iis.WinRMConfig{Host: "127.0.0.1", Port: srv.Port(), HTTPS: true, CACert: pki.CAPEM,
		Auth: iis.AuthCertificate, CertPEM: cert, KeyPEM: key})
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
