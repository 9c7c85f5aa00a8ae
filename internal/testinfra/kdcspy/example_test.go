package kdcspy_test

import (
	"fmt"

	"github.com/segkcd/segkcd/internal/testinfra/kdcspy"
)

// A Counter is a kerberos.Transport's Dialer in tests; here it sees a
// message that is no Kerberos request at all, and counts nothing.
func ExampleCounter() {
	var c kdcspy.Counter
	c.Observe([]byte("not kerberos"))
	fmt.Printf("%+v\n", c.Counts())
	// Output: {AS:0 S4U2Self:0 S4U2Proxy:0 Resent:0}
}
