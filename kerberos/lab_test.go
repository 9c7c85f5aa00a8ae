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

// The KCD setup every test here shares, made with the ad package. The names
// are this package's own: other test binaries share the lab's DC.
const (
	svcName     = "svc_krb"
	svcPassword = "Krb-Svc-Passw0rd!"
	asaPassword = "Asa-Rolled-Passw0rd-1234567890!" // what an ASA roll would set
	noPTName    = "svc_nopt"                        // constrained delegation without protocol transition
	asaName     = "KRBASA"
	keylessName = "NOKEYS" // a computer made by samba-tool: no keys
)

// setups are the labs set up so far: *lab.Lab → *setupOnce.
var setups sync.Map

type setupOnce struct {
	once sync.Once
	err  error
}

type env struct {
	lab        *lab.Lab
	cfg        *config.Config
	mailSPN    string
	otherSPN   string // on the ASA, not in msDS-AllowedToDelegateTo
	keylessSPN string
	unknownSPN string
}

// setup is the KCD setup on the test binary's lab.
func setup(t testing.TB) env { t.Helper(); return setupOn(t, theLab.Get(t)) }

// setupOn makes the KCD setup on l, once per lab.
func setupOn(t testing.TB, l *lab.Lab) env {
	t.Helper()
	e := env{lab: l, mailSPN: "http/mail-krb." + l.DNSDomain, otherSPN: "http/other-krb." + l.DNSDomain,
		keylessSPN: "http/nokeys-krb." + l.DNSDomain, unknownSPN: "http/nobody-krb." + l.DNSDomain}
	v, _ := setups.LoadOrStore(l, &setupOnce{})
	done := v.(*setupOnce)
	var setupErr error
	done.once.Do(func() {
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
		done.err = setupErr
	}
	if done.err != nil {
		t.Fatalf("KCD setup: %v", done.err)
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
