package siteconfig

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecret(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	os.WriteFile(file, []byte("Passw0rd!\r\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	t.Setenv("SITECONFIG_PW", "From-Env!")
	t.Setenv("SITECONFIG_EMPTY", "")
	for _, c := range []struct {
		s    Secret
		want string
		err  string
	}{
		{Secret{File: file}, "Passw0rd!", ""},
		{Secret{Env: "SITECONFIG_PW"}, "From-Env!", ""},
		{Secret{Env: "SITECONFIG_EMPTY"}, "", "x: $SITECONFIG_EMPTY is empty"},
		{Secret{File: empty}, "", "is empty"},
		{Secret{File: filepath.Join(dir, "none")}, "", "no such file"},
		{Secret{}, "", "name an env or a file"},
	} {
		got, err := c.s.Value("x")
		if got != c.want || (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%+v: %q %v", c.s, got, err)
		}
	}
}

func TestCheck(t *testing.T) {
	ok := AD{LDAPURL: "ldaps://dc1", BindUser: `CORP\admin`, BindPassword: Secret{Env: "X"}}
	if err := ok.Check(); err != nil {
		t.Fatal(err)
	}
	for field, mutate := range map[string]func(*AD){
		"ldap_url":      func(a *AD) { a.LDAPURL = "" },
		"bind_user":     func(a *AD) { a.BindUser = "" },
		"bind_password": func(a *AD) { a.BindKeytab = "/etc/x.keytab" },
		"kdcs":          func(a *AD) { a.KDCs, a.Krb5Conf = []string{"dc1"}, "/etc/krb5.conf" },
	} {
		a := ok
		mutate(&a)
		var fe *FieldError
		if err := a.Check(); !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("%s: %v", field, err)
		}
	}
	neither := ok
	neither.BindPassword = Secret{}
	if err := neither.Check(); err == nil {
		t.Error("no bind secret at all passed")
	}
}

func TestAccountName(t *testing.T) {
	for in, want := range map[string]string{`CORP\svc_roll`: "svc_roll", "svc_roll@corp.example.com": "svc_roll", "svc_roll": "svc_roll"} {
		if got := accountName(in); got != want {
			t.Errorf("%s: %s", in, got)
		}
	}
}

// The servers share a listener's client; a server without any address,
// or an unknown logon, is refused before anything is dialled.
func TestShells(t *testing.T) {
	conn := &Conn{Password: "Bind-Passw0rd!"}
	w := WinRM{Address: "cas1.corp.example.com:5985"}
	servers, exch, err := w.Shells([]Server{{Name: "CAS1"}, {Name: "CAS2"}, {Name: "CAS3", WinRM: "cas3:5985"}}, conn, `CORP\admin`)
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 3 || servers[0].Shell != servers[1].Shell || servers[2].Shell == servers[0].Shell || exch != servers[0].Shell {
		t.Fatalf("shells not shared by listener: %+v", servers)
	}
	if _, _, err := (WinRM{}).Shells([]Server{{Name: "CAS1"}}, conn, "admin"); err == nil || !strings.Contains(err.Error(), "no WinRM address") {
		t.Errorf("no address: %v", err)
	}
	if _, _, err := (WinRM{Address: "cas1", Auth: "digest"}).Shells([]Server{{Name: "CAS1"}}, conn, "admin"); err == nil {
		t.Error("unknown auth passed")
	}
	if _, _, err := w.Shells([]Server{{Name: "CAS1"}}, &Conn{}, "admin"); err == nil || !strings.Contains(err.Error(), "winrm.password") {
		t.Errorf("keytab identity with NTLM and no winrm.password: %v", err)
	}
}

// A keytab that is not one is refused with the field's name, before any
// network access.
func TestDialBadKeytab(t *testing.T) {
	kt := filepath.Join(t.TempDir(), "bad.keytab")
	os.WriteFile(kt, []byte("not a keytab"), 0o600)
	_, err := AD{LDAPURL: "ldaps://127.0.0.1:1", BindUser: "svc", BindKeytab: kt, Realm: "CORP.EXAMPLE.COM"}.Dial(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "bind_keytab:") {
		t.Fatalf("%v", err)
	}
}

// TestEveryDCsKDC: with more DCs, each one's KDC is listed, in the order
// the DCs are tried, and a dead first DC fails over (ad.Config.URLs).
func TestEveryDCsKDC(t *testing.T) {
	a := AD{LDAPURL: "ldaps://dc1.corp.example.com", LDAPURLs: []string{"ldaps://dc2.corp.example.com:636"}}
	c, err := a.kerberosConfig(context.Background(), "CORP.EXAMPLE.COM")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Realms[0].KDC, " "); got != "dc1.corp.example.com:88 dc2.corp.example.com:88" {
		t.Errorf("KDCs: %s", got)
	}
	a.LDAPURLs = []string{"ldaps://"}
	if _, err := a.kerberosConfig(context.Background(), "CORP.EXAMPLE.COM"); err == nil {
		t.Error("a URL without a host")
	}
}
