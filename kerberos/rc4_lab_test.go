package kerberos_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jcmturner/gokrb5/v8/iana/etypeID"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/kerberos"
)

// An account allowed RC4 only (msDS-SupportedEncryptionTypes 4), as one
// whose keys predate AES: the client refuses a ticket to it by default,
// and takes it, in RC4, with AllowRC4; its attributes say it is exposed to
// the cut-off, and the service account's own key is AES.
func TestRC4OnlyAccount(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	admin, err := e.lab.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	const name = "svc_rc4krb"
	spn := "http/rc4-krb." + e.lab.DNSDomain
	if _, err := admin.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: name, Password: "Rc4-Only-Passw0rd-1!",
		PasswordNeverExpires: true, EncryptionTypes: ad.EncRC4HMAC}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.SetSPN(ctx, name, spn); err != nil {
		t.Fatal(err)
	}
	tk, err := e.client().ServiceTicket(ctx, spn)
	if !errors.Is(err, kerberos.ErrWeakEncryption) && !errors.Is(err, kerberos.ErrETypeNotSupported) {
		t.Fatalf("a ticket to an RC4-only account, by default: %v %v", tk, err)
	}
	t.Logf("refused by default: %v", err)
	allow := e.client()
	allow.AllowRC4 = true
	tk, err = allow.ServiceTicket(ctx, spn)
	if err != nil || tk.Ticket.EncPart.EType != etypeID.RC4_HMAC {
		t.Fatalf("with AllowRC4: %v %v", tk, err)
	}
	acct, err := admin.FindAccount(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if why := acct.RC4Exposure(); len(why) == 0 {
		t.Errorf("%s (msDS-SupportedEncryptionTypes %v) is not reported exposed", name, acct.SupportedEncryptionTypes)
	}
	svc, err := admin.FindAccount(ctx, svcName)
	if err != nil {
		t.Fatal(err)
	}
	if why := svc.RC4Exposure(); len(why) != 0 {
		t.Errorf("%s, AES only, reported exposed: %v", svcName, why)
	}
	if kt, err := e.client().KeyType(ctx); err != nil || (kt != etypeID.AES256_CTS_HMAC_SHA1_96 && kt != etypeID.AES128_CTS_HMAC_SHA1_96) {
		t.Errorf("the service account's key type: %d %v", kt, err)
	}
}
