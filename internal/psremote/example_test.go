package psremote_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/segkcd/segkcd/internal/psremote"
	"github.com/segkcd/segkcd/internal/wsmantest"
)

// Run a script with NTLM on plain HTTP: every message is sealed, so the
// host needs no AllowUnencrypted. The host here is segkcd's WS-Man test
// host (a model of Windows).
func Example() {
	srv, err := wsmantest.StartWith(wsmantest.NewHost("cas1"), wsmantest.Options{User: `CORP\admin`, Password: "Adm1n-pw!"})
	if err != nil {
		panic(err)
	}
	defer srv.Close()

	c, err := psremote.New(psremote.Config{Host: "127.0.0.1", Port: srv.Port(), Auth: psremote.AuthNTLM,
		User: `CORP\admin`, Password: "Adm1n-pw!"})
	if err != nil {
		panic(err)
	}
	group := psremote.MustQuote("IIS_IUSRS")
	out, err := c.RunPowerShell(context.Background(), "$ErrorActionPreference = 'Stop'\n"+
		"Get-LocalGroupMember -Group "+group+" | ForEach-Object -MemberName Name | ConvertTo-Json -Compress")
	fmt.Println(strings.TrimSpace(out), err)
	fmt.Println("sealed requests:", srv.Sealed())
	// Output:
	// "NT AUTHORITY\\IUSR" <nil>
	// sealed requests: 4
}
