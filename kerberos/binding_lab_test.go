package kerberos_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segkcd/segkcd/internal/testinfra/gssaccept"
	"github.com/segkcd/segkcd/kerberos"
)

// testCertBinding is the tls-server-end-point binding of a new certificate.
func testCertBinding(t *testing.T) kerberos.ChannelBinding {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "mail"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	cb, err := kerberos.TLSServerEndPoint(c)
	if err != nil {
		t.Fatal(err)
	}
	return cb
}

// The gateway's bound token against MIT krb5's gss_accept_sec_context, an
// acceptor independent of ours, given the connection's bindings: accepted
// when bound to that certificate, refused with GSS_S_BAD_BINDINGS when
// bound to another. (MIT accepts a token with no binding at all: only the
// refusal shows the token carries one.) Our Acceptor with Require agrees.
func TestBoundTokenAgainstMIT(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	dir := t.TempDir()
	mit, err := gssaccept.Build(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	kt, err := kerberos.KeytabFromPassword(kerberos.KeytabSpec{Realm: e.lab.Realm, SAMAccountName: asaName + "$",
		Password: asaPassword, Principals: []string{e.mailSPN}, KVNO: 2})
	if err != nil {
		t.Fatal(err)
	}
	ktb, err := kt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ktPath := filepath.Join(dir, "asa.keytab")
	if err := os.WriteFile(ktPath, ktb, 0o600); err != nil {
		t.Fatal(err)
	}
	tk, err := e.client().Impersonate(ctx, "alice", e.mailSPN)
	if err != nil {
		t.Fatal(err)
	}
	mine, other := testCertBinding(t), testCertBinding(t)
	token := func(cb kerberos.ChannelBinding) (string, []byte) {
		t.Helper()
		h, err := kerberos.NegotiateHeaderBound(tk, cb)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(h, "Negotiate "))
		if err != nil {
			t.Fatal(err)
		}
		return h, raw
	}
	for _, c := range []struct {
		name        string
		bound, acc  kerberos.ChannelBinding
		want        string // "accepted" or the status
		withBinding bool
	}{
		{"bound to the connection's certificate", mine, mine, "accepted", true},
		{"bound to another certificate", other, mine, "GSS_S_BAD_BINDINGS", true},
		{"bound, acceptor without bindings", mine, nil, "accepted", false},
		{"unbound, acceptor with bindings (MIT allows it)", nil, mine, "accepted", true},
	} {
		_, raw := token(c.bound)
		var appData []byte
		if c.withBinding {
			appData = c.acc
		}
		r, err := mit.Accept(ctx, ktPath, raw, appData)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got := r.Status
		if r.Accepted {
			got = "accepted"
			if r.Client != "alice@"+e.lab.Realm {
				t.Errorf("%s: MIT accepted it for %q", c.name, r.Client)
			}
		}
		if got != c.want {
			t.Errorf("%s: MIT says %s (%s), want %s", c.name, got, r.Output, c.want)
		}
		t.Logf("MIT gss_accept_sec_context, %s: %s", c.name, r.Output)
	}
	ours := &kerberos.Acceptor{Keytab: kt, TokenChecking: kerberos.TokenCheckingRequire, ChannelBinding: mine}
	h, _ := token(mine)
	if id, err := ours.Accept(h); err != nil || id.Account != "alice" {
		t.Errorf("our Require acceptor, bound to its certificate: %+v %v", id, err)
	}
	for name, cb := range map[string]kerberos.ChannelBinding{"another certificate": other, "no binding": nil} {
		h, _ := token(cb)
		if _, err := ours.Accept(h); !errors.Is(err, kerberos.ErrChannelBinding) {
			t.Errorf("our Require acceptor, %s: %v, want ErrChannelBinding", name, err)
		}
	}
}
