package kerberos_test

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/config"

	"github.com/segkcd/segkcd"
	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
	"github.com/segkcd/segkcd/kerberos"
)

var theLab lab.Shared

func TestMain(m *testing.M) { os.Exit(theLab.Run(m)) }

// The KCD setup every test here shares, made with the ad package.
const (
	svcName     = "svc_awseg"
	svcPassword = "Krb-Svc-Passw0rd!"
	asaPassword = "Asa-Rolled-Passw0rd-1234567890!" // what an ASA roll would set
	noPTName    = "svc_nopt"                        // constrained delegation without protocol transition
	asaName     = "EXCHASA"
	keylessName = "NOKEYS" // a computer made by samba-tool: no keys
)

var (
	setupOnce sync.Once
	setupErr  error
)

type env struct {
	lab        *lab.Lab
	cfg        *config.Config
	mailSPN    string
	otherSPN   string // on the ASA, not in msDS-AllowedToDelegateTo
	keylessSPN string
	unknownSPN string
}

func setup(t testing.TB) env {
	t.Helper()
	l := theLab.Get(t)
	e := env{lab: l, mailSPN: "http/mail." + l.DNSDomain, otherSPN: "http/other." + l.DNSDomain,
		keylessSPN: "http/nokeys." + l.DNSDomain, unknownSPN: "http/nobody." + l.DNSDomain}
	setupOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, err := l.Dial(ctx)
		if err != nil {
			setupErr = err
			return
		}
		defer c.Close()
		if _, err := l.SambaTool(ctx, "computer", "create", keylessName); err != nil {
			setupErr = err
			return
		}
		if setupErr = l.ProvisionKCD(ctx, lab.KCD{ASA: asaName, ASAPassword: asaPassword, Service: svcName, Password: svcPassword,
			SPNs: []string{e.mailSPN}}); setupErr != nil {
			return
		}
		// Beyond the standard setup: an SPN on the ASA not delegated to, a keyless
		// target, and a service account without protocol transition.
		steps := []func() (segkcd.Change, error){
			func() (segkcd.Change, error) { return c.SetSPN(ctx, asaName, e.otherSPN) },
			func() (segkcd.Change, error) { return c.SetSPN(ctx, keylessName, e.keylessSPN) },
			func() (segkcd.Change, error) {
				return c.AddAllowedToDelegateTo(ctx, svcName, e.keylessSPN, e.unknownSPN)
			},
			func() (segkcd.Change, error) {
				return c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: noPTName, Password: svcPassword, PasswordNeverExpires: true})
			},
			func() (segkcd.Change, error) { return c.SetSPN(ctx, noPTName, "HTTP/"+noPTName) },
			func() (segkcd.Change, error) { return c.AddAllowedToDelegateTo(ctx, noPTName, e.mailSPN) },
		}
		for _, s := range steps {
			if _, err := s(); err != nil {
				setupErr = err
				return
			}
		}
	})
	if setupErr != nil {
		t.Fatalf("KCD setup: %v", setupErr)
	}
	cfg, err := kerberos.LoadConfig(l.Krb5Conf)
	if err != nil {
		t.Fatal(err)
	}
	e.cfg = cfg
	return e
}

func (e env) client() *kerberos.Client {
	return kerberos.NewWithPassword(svcName, e.lab.Realm, svcPassword, e.cfg)
}

// clientVia is the service account client over a transport of its own.
func (e env) clientVia(t *kerberos.Transport) *kerberos.Client {
	c := e.client()
	c.Transport = t
	return c
}
