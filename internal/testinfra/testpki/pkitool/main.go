// Command pkitool writes a throwaway PKI for the demo into a directory:
// ca.pem, server.crt/server.key (127.0.0.1 and localhost), an empty
// devices.crl, and a device certificate USER.crt/USER.key with the UPN
// USER@DOMAIN for each user named; USER=SID also writes the account's SID
// in the certificate's SID extension, as a Windows CA does (KB5014754's
// strong mapping), and FILE:USER=SID writes the certificate to FILE.crt.
//
//	pkitool -dir DIR -domain corp.example.test alice=S-1-5-21-...-1104 carol forged:alice=S-1-5-21-...-1105
package main

import (
	"flag"
	"log"
	"strings"

	"github.com/segkcd/segkcd/internal/testinfra/testpki"
)

func main() {
	dir := flag.String("dir", "", "where to write")
	domain := flag.String("domain", "", "UPN suffix of the device certificates")
	flag.Parse()
	ca, err := testpki.New("segkcd demo device CA")
	if err != nil {
		log.Fatal(err)
	}
	server, err := ca.Server()
	if err != nil {
		log.Fatal(err)
	}
	crl, err := ca.CRL(1)
	if err != nil {
		log.Fatal(err)
	}
	files := map[string][]byte{"ca.pem": ca.PEM, "server.crt": server.CertPEM, "server.key": server.KeyPEM, "devices.crl": crl}
	for _, arg := range flag.Args() {
		file, arg, ok := strings.Cut(arg, ":")
		if !ok {
			arg = file
		}
		u, sid, _ := strings.Cut(arg, "=")
		if !ok {
			file = u
		}
		spec := testpki.DeviceSpec{UPN: u + "@" + *domain, SID: sid}
		if sid != "" {
			spec.SIDIn = testpki.SIDExtension
		}
		dev, err := ca.DeviceFor(spec)
		if err != nil {
			log.Fatal(err)
		}
		files[file+".crt"], files[file+".key"] = dev.CertPEM, dev.KeyPEM
	}
	for name, b := range files {
		if _, err := testpki.WriteFile(*dir, name, b); err != nil {
			log.Fatal(err)
		}
	}
}
