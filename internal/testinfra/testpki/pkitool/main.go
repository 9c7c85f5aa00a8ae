// Command pkitool writes a throwaway PKI for the demo into a directory:
// ca.pem, server.crt/server.key (127.0.0.1 and localhost), an empty
// devices.crl, and a device certificate USER.crt/USER.key with the UPN
// USER@DOMAIN for each user named.
//
//	pkitool -dir DIR -domain corp.example.test alice carol
package main

import (
	"flag"
	"log"

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
	for _, u := range flag.Args() {
		dev, err := ca.Device(u+"@"+*domain, "", "")
		if err != nil {
			log.Fatal(err)
		}
		files[u+".crt"], files[u+".key"] = dev.CertPEM, dev.KeyPEM
	}
	for name, b := range files {
		if _, err := testpki.WriteFile(*dir, name, b); err != nil {
			log.Fatal(err)
		}
	}
}
