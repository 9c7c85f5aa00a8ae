package siteconfig_test

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/segkcd/segkcd/examples/internal/siteconfig"
)

// A program's JSON names where the bind identity's secret is, never the
// secret itself.
func Example() {
	var c struct {
		siteconfig.AD
		Servers []siteconfig.Server `json:"servers"`
		WinRM   siteconfig.WinRM    `json:"winrm"`
	}
	os.Setenv("ROLL_BIND_PASSWORD", "Example-Passw0rd!")
	err := json.Unmarshal([]byte(`{
		"ldap_url": "ldaps://dc1.corp.example.com",
		"bind_user": "CORP\\svc_asaroll",
		"bind_password": {"env": "ROLL_BIND_PASSWORD"},
		"servers": [{"name": "CAS1"}, {"name": "CAS2"}],
		"winrm": {"address": "cas1.corp.example.com:5986", "auth": "kerberos", "tls": true}
	}`), &c)
	fmt.Println(err, c.AD.Check())
	pw, err := c.BindPassword.Value("bind_password")
	fmt.Println(len(pw), err, c.WinRM.Auth, len(c.Servers))
	// Output:
	// <nil> <nil>
	// 17 <nil> kerberos 2
}
