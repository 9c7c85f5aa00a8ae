package winrs_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/segkcd/segkcd/internal/wsman"
	"github.com/segkcd/segkcd/winrs"
	"github.com/segkcd/segkcd/winrs/winrstest"
)

// Run a script with NTLM on plain HTTP: every message is sealed, so the
// host needs no AllowUnencrypted. The host here is segkcd's WS-Man test
// host (a model of Windows).
func Example() {
	srv, err := winrstest.StartWith(winrstest.NewHost("cas1"), winrstest.Options{User: `CORP\admin`, Password: "Adm1n-pw!"})
	if err != nil {
		panic(err)
	}
	defer srv.Close()

	c, err := winrs.New(winrs.Config{Host: "127.0.0.1", Port: srv.Port(), Auth: winrs.NTLM{User: `CORP\admin`, Password: "Adm1n-pw!"}})
	if err != nil {
		panic(err)
	}
	group := wsman.MustQuote("IIS_IUSRS")
	out, err := c.RunPowerShell(context.Background(), "$ErrorActionPreference = 'Stop'\n"+
		"Get-LocalGroupMember -Group "+group+" | ForEach-Object -MemberName Name | ConvertTo-Json -Compress")
	fmt.Println(strings.TrimSpace(out), err)
	fmt.Println("sealed requests:", srv.Sealed())
	// Output:
	// "NT AUTHORITY\\IUSR" <nil>
	// sealed requests: 4
}
