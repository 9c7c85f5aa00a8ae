// Command eastesthost runs the Exchange ActiveSync stand-in (package
// eastest) for the demo: HTTPS on loopback, Negotiate accepted with a
// keytab (the ASA's, exported from the lab after the roll). It is a test
// stand-in, not Exchange.
//
//	eastesthost -keytab asa.keytab -principal 'EXCHASA$' -cert c.pem -key k.pem -addr-file addr [-token-checking Require]
//
// Tokens must be bound to its certificate (Extended Protection, IIS's
// tokenChecking Require) unless -token-checking says otherwise.
package main

import (
	"crypto/tls"
	"flag"
	"log"
	"net"
	"os"

	"github.com/segkcd/segkcd/internal/testinfra/eastest"
	"github.com/segkcd/segkcd/kerberos"
)

func main() {
	ktPath := flag.String("keytab", "", "keytab of the service (the ASA)")
	principal := flag.String("principal", "", "keytab entry to decrypt with, e.g. EXCHASA$")
	certFile := flag.String("cert", "", "TLS certificate (PEM)")
	keyFile := flag.String("key", "", "TLS key (PEM)")
	addrFile := flag.String("addr-file", "", "write the listening address here")
	checking := flag.String("token-checking", "Require", "Extended Protection, as IIS's tokenChecking: None, Allow or Require")
	flag.Parse()
	tc, ok := map[string]kerberos.TokenChecking{"None": kerberos.TokenCheckingNone, "Allow": kerberos.TokenCheckingAllow,
		"Require": kerberos.TokenCheckingRequire}[*checking]
	if !ok {
		log.Fatalf("-token-checking %q: None, Allow or Require", *checking)
	}
	kt, err := kerberos.LoadKeytab(*ktPath)
	if err != nil {
		log.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*addrFile, []byte(ln.Addr().String()), 0o600); err != nil {
		log.Fatal(err)
	}
	log.Fatal(eastest.Serve(ln, &kerberos.Acceptor{Keytab: kt, Principal: *principal, TokenChecking: tc},
		&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
}
