package segkcd_test

import (
	"fmt"

	"github.com/segkcd/segkcd"
)

// Every mutating operation of ad, exchange and iis reports a Change; a
// second run of the same provisioning reports Unchanged.
func ExampleChange() {
	ch := segkcd.Change{What: "add SPN", Object: "CN=EXCHASA,CN=Computers,DC=corp,DC=example,DC=com",
		Action: segkcd.Modified, Details: []string{"servicePrincipalName += http/mail.corp.example.com"}}
	fmt.Println(ch.Changed())
	fmt.Println(ch)
	// Output:
	// true
	// modified add SPN CN=EXCHASA,CN=Computers,DC=corp,DC=example,DC=com (servicePrincipalName += http/mail.corp.example.com)
}
