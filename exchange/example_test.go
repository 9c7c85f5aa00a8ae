package exchange_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"os"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/exchange"
	"github.com/segkcd/segkcd/winrs"
)

// Roll the ASA password on every Client Access server, then in AD, and get
// a keytab of the new keys.
func Example() {
	ctx := context.Background()
	sh, err := winrs.New(winrs.Config{Host: "cas1.corp.example.com", TLS: &tls.Config{},
		Auth: winrs.NTLM{User: `CORP\admin`, Password: os.Getenv("WINRM_PASSWORD")}})
	if err != nil {
		log.Fatal(err)
	}
	dc, err := ad.Dial(ctx, ad.Config{URL: "ldaps://dc1.corp.example.com",
		Bind: ad.SimpleBind{Username: `CORP\admin`, Password: os.Getenv("AD_PASSWORD")}})
	if err != nil {
		log.Fatal(err)
	}
	defer dc.Close()
	org := &exchange.Org{Shell: sh}
	res, err := org.RollASAPassword(ctx, exchange.Roll{
		Servers: []string{"CAS1", "CAS2"}, User: `CORP\EXCHASA$`, AD: dc, KeytabRealm: "CORP.EXAMPLE.COM"})
	if err != nil {
		// The error says which step failed and what state it left; finish with the same password:
		if res != nil {
			err = org.Resume(ctx, res)
		}
		if err != nil {
			log.Fatal(err)
		}
	}
	for _, st := range res.Status {
		fmt.Println(st.Server, st.Latest.UserName, st.Latest.WhenAdded)
	}
}

func ExampleParseVersion() {
	v, _ := exchange.ParseVersion("Version 15.1 (Build 2507.6)")
	fmt.Println(v.Product(), v.Build)
	// Output: 2016 2507
}
