package lab

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/segkcd/segkcd"
	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/kerberos"
)

// UserPassword is the password of every seeded user. It is a lab fixture.
const UserPassword = "Lab-Us3r-Passw0rd!"

// Fixture is a seeded user.
type Fixture struct {
	Name string
	Mail string
	Set  ad.UAC // flags set after creation
}

// Fixtures are the users every lab has: alice and bob are ordinary, carol
// is sensitive (NOT_DELEGATED), dave is disabled.
var Fixtures = []Fixture{
	{Name: "alice", Mail: "alice@%s"},
	{Name: "bob", Mail: "bob@%s"},
	{Name: "carol", Mail: "carol@%s", Set: ad.UACNotDelegated},
	{Name: "dave", Mail: "dave@%s", Set: ad.UACAccountDisable},
}

// Dial binds to the lab as Administrator over LDAPS.
func (l *Lab) Dial(ctx context.Context) (*ad.Conn, error) {
	cfg, err := l.ADConfig()
	if err != nil {
		return nil, err
	}
	return ad.Dial(ctx, cfg)
}

// ADConfig is the ad.Config for the lab's administrator over LDAPS.
func (l *Lab) ADConfig() (ad.Config, error) {
	tc, err := l.TLSConfig()
	if err != nil {
		return ad.Config{}, err
	}
	return ad.Config{
		URL:       l.LDAPSURL(),
		GCURL:     l.GCURL(),
		TLSConfig: tc,
		Bind:      ad.SimpleBind{Username: l.AdminBindName(), Password: l.AdminPassword},
	}, nil
}

// Seed creates the fixture users through the ad package (so every lab start
// exercises it). It is idempotent: a kept lab is seeded again unchanged.
func (l *Lab) Seed(ctx context.Context) error {
	c, err := l.Dial(ctx)
	if err != nil {
		return fmt.Errorf("lab: seed: %w", err)
	}
	defer c.Close()
	for _, f := range Fixtures {
		_, err := c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{
			Name:     f.Name,
			Password: UserPassword,
			Mail:     fmt.Sprintf(f.Mail, l.DNSDomain),
			// UPN in the mail domain, as Exchange users usually have.
			UserPrincipalName:    f.Name + "@" + l.DNSDomain,
			PasswordNeverExpires: true,
		})
		if err != nil {
			return fmt.Errorf("lab: seed %s: %w", f.Name, err)
		}
		if f.Set != 0 {
			if _, err := c.SetAccountFlags(ctx, f.Name, f.Set, 0); err != nil {
				return fmt.Errorf("lab: seed %s: %w", f.Name, err)
			}
		}
	}
	return nil
}

// KCD is a standard delegation setup: the ASA computer with the mail SPNs,
// and a service account with its own SPN, protocol transition and
// constrained delegation to the mail SPNs (the seed procedure's AD steps).
type KCD struct {
	ASA         string   // computer name, e.g. EXCHASA
	ASAPassword string   // set with ResetPassword when not empty (as an ASA roll would)
	Service     string   // e.g. svc_awseg
	Password    string   // the service account's
	SPNs        []string // mail SPNs, on the ASA and delegated to
}

// ProvisionKCD makes k through the ad package; it is idempotent.
func (l *Lab) ProvisionKCD(ctx context.Context, k KCD) error {
	c, err := l.Dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	steps := []func() (segkcd.Change, error){
		func() (segkcd.Change, error) {
			return c.CreateComputerAccount(ctx, ad.ComputerAccountRequest{Name: k.ASA})
		},
		func() (segkcd.Change, error) {
			return c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: k.Service, Password: k.Password, PasswordNeverExpires: true})
		},
		func() (segkcd.Change, error) { return c.SetSPN(ctx, k.Service, "HTTP/"+k.Service) },
		func() (segkcd.Change, error) { return c.SetProtocolTransition(ctx, k.Service, true) },
		func() (segkcd.Change, error) { return c.AddAllowedToDelegateTo(ctx, k.Service, k.SPNs...) },
	}
	if k.ASAPassword != "" {
		steps = append(steps, func() (segkcd.Change, error) { return c.ResetPassword(ctx, k.ASA+"$", k.ASAPassword) })
	}
	for _, spn := range k.SPNs {
		spn := spn
		steps = append(steps, func() (segkcd.Change, error) { return c.SetSPN(ctx, k.ASA, spn) })
	}
	for _, step := range steps {
		if _, err := step(); err != nil {
			return fmt.Errorf("lab: provision KCD: %w", err)
		}
	}
	return nil
}

// HTTPHost makes a computer account NAME$ with a known password and the
// SPN HTTP/<name>.<dns domain>, as a Windows host running WinRM or IIS has,
// and returns the SPN and a keytab for it (what the host's acceptor uses).
// It is idempotent for one name and password.
func (l *Lab) HTTPHost(ctx context.Context, name, password string) (string, *keytab.Keytab, error) {
	c, err := l.Dial(ctx)
	if err != nil {
		return "", nil, err
	}
	defer c.Close()
	spn := "HTTP/" + strings.ToLower(name) + "." + l.DNSDomain
	if _, err := c.CreateComputerAccount(ctx, ad.ComputerAccountRequest{Name: name, Password: password}); err != nil {
		return "", nil, err
	}
	if _, err := c.SetSPN(ctx, name, spn); err != nil {
		return "", nil, err
	}
	acct, err := c.FindAccount(ctx, name)
	if err != nil {
		return "", nil, err
	}
	kt, err := kerberos.KeytabFromPassword(kerberos.KeytabSpec{Realm: l.Realm, SAMAccountName: strings.ToUpper(name) + "$",
		Password: password, Principals: []string{spn}, KVNO: uint32(acct.KeyVersion)})
	return spn, kt, err
}

// PublishNTAuth adds a CA certificate (DER) to the forest's
// NTAuthCertificates object, making the object if the forest has none, as
// `certutil -dspublish -f ca.crt NTAuthCA` does on Windows. It writes as
// the DC's system (ldbmodify): Samba provisions no such object. The object
// is the domain's: tests that publish use a CA of their own.
func (l *Lab) PublishNTAuth(ctx context.Context, der []byte) error {
	dn := ad.NTAuthContainer + ",CN=Configuration," + l.BaseDN
	b64 := base64.StdEncoding.EncodeToString(der)
	add := "dn: " + dn + "\nchangetype: add\nobjectClass: certificationAuthority\ncn: NTAuthCertificates\n" +
		"cACertificate:: " + b64 + "\nauthorityRevocationList:: AA==\ncertificateRevocationList:: AA==\n"
	if _, err := l.Ldbmodify(ctx, add); err == nil {
		return nil
	}
	more := "dn: " + dn + "\nchangetype: modify\nadd: cACertificate\ncACertificate:: " + b64 + "\n"
	if out, err := l.Ldbmodify(ctx, more); err != nil && !strings.Contains(out, "already exists") && !strings.Contains(err.Error(), "already exists") {
		return fmt.Errorf("lab: publish to NTAuth: %w", err)
	}
	return nil
}
