package winrstest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segkcd/segkcd/internal/testinfra/lab"
	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/winrs/winrstest"
)

var theLab lab.Shared

func TestMain(m *testing.M) { os.Exit(theLab.Run(m)) }

// MIT krb5's GSS-API (python3-gssapi) seals and unseals WinRM messages
// with the test host, which uses the kerberos package's SecurityContext:
// MIT's initiator tokens must unseal here, and our acceptor tokens there.
// winrs's initiator is tested against the same host in package exchange.
func TestMITKerberosSealedWinRM(t *testing.T) {
	needPython(t, "gssapi, winrm")
	l := theLab.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spn, kt, err := l.HTTPHost(ctx, "WINRM1", "Winrm1-Host-Passw0rd-0123456789!")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := winrstest.StartWith(winrstest.NewHost("winrm1"), winrstest.Options{User: "unused", Password: "unused-Passw0rd!"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.AcceptKerberos(&kerberos.Acceptor{Keytab: kt})

	kinit := l.Command(ctx, "alice-mit.cc", "kinit", "alice")
	kinit.Stdin = strings.NewReader(lab.UserPassword + "\n")
	if out, err := kinit.CombinedOutput(); err != nil {
		t.Fatalf("kinit: %v %s", err, out)
	}
	ccache := filepath.Join(l.Dir, "alice-mit.cc")
	var r struct {
		pyResult
		SignatureLength int `json:"signature_length"`
	}
	trace := runPeer(t, "testdata/mit_kerberos_run.py", map[string]string{"url": fmt.Sprintf("http://%s/wsman", srv.Addr()),
		"spn": spn, "realm": l.Realm, "script": pyScript}, []string{"KRB5_CONFIG=" + l.Krb5Conf, "KRB5CCNAME=FILE:" + ccache}, &r)
	if r.Error != "" || r.Status != 0 || strings.TrimSpace(r.Stdout) != pyOutput {
		t.Fatalf("MIT GSS-API client: %+v\n%s", r, trace)
	}
	if users := srv.KerberosUsers(); len(users) != 1 || users[0] != "alice@"+l.Realm || srv.Sealed() < 4 {
		t.Fatalf("logons %v, sealed %d", users, srv.Sealed())
	}
	// MIT's gss_wrap_iov header for AES is 60 bytes, as our Seal makes it.
	if r.SignatureLength != 60 {
		t.Fatalf("MIT's header is %d bytes", r.SignatureLength)
	}
}
