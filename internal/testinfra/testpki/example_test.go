package testpki_test

import (
	"fmt"

	"github.com/segkcd/segkcd/internal/certname"
	"github.com/segkcd/segkcd/internal/testinfra/testpki"
)

// A device certificate with a UPN, read back as the gateway reads it.
func ExampleCA_Device() {
	ca, err := testpki.New("device CA")
	if err != nil {
		panic(err)
	}
	dev, err := ca.Device("alice@corp.example.test", "", "Alice")
	if err != nil {
		panic(err)
	}
	for _, e := range dev.Cert.Extensions {
		if e.Id.String() == "2.5.29.17" {
			upns, _ := certname.ParseUPNs(e.Value)
			fmt.Println(upns, dev.Cert.Subject.CommonName)
		}
	}
	// Output: [alice@corp.example.test] Alice
}
