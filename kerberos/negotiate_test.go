package kerberos_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/segkcd/segkcd/kerberos"
)

// exportKeytab asks samba-tool for an account's keys.
func exportKeytab(t *testing.T, e env, principal string) *keytab.Keytab {
	t.Helper()
	path := filepath.Join(t.TempDir(), "exported.keytab")
	if out, err := e.lab.SambaTool(context.Background(), "domain", "exportkeytab", path, "--principal="+principal); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	kt, err := keytab.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return kt
}

// keysByEtype maps etype to key bytes, taking the highest kvno.
func keysByEtype(kt *keytab.Keytab) map[int32]string {
	m := map[int32]string{}
	best := map[int32]uint32{}
	for _, en := range kt.Entries {
		if en.KVNO >= best[en.Key.KeyType] {
			best[en.Key.KeyType] = en.KVNO
			m[en.Key.KeyType] = string(en.Key.KeyValue)
		}
	}
	return m
}

func TestKeytabFromPasswordMatchesSamba(t *testing.T) {
	e := setup(t)
	for _, tc := range []struct{ sam, password string }{
		{asaName + "$", asaPassword}, // computer salt: REALM host name . domain
		{svcName, svcPassword},       // user salt: REALM sAMAccountName
	} {
		ours, err := kerberos.KeytabFromPassword(kerberos.KeytabSpec{Realm: e.lab.Realm, SAMAccountName: tc.sam, Password: tc.password})
		if err != nil {
			t.Fatal(err)
		}
		theirs := keysByEtype(exportKeytab(t, e, tc.sam))
		mine := keysByEtype(ours)
		for _, et := range []int32{etypeID.AES256_CTS_HMAC_SHA1_96, etypeID.AES128_CTS_HMAC_SHA1_96, etypeID.RC4_HMAC} {
			if theirs[et] == "" || mine[et] != theirs[et] {
				t.Errorf("%s etype %d: our key differs from samba-tool exportkeytab's (salt %q)", tc.sam, et,
					kerberos.ADSalt(e.lab.Realm, tc.sam, ""))
			}
		}
	}
	// MIT klist reads what we write.
	kt, err := kerberos.KeytabFromPassword(kerberos.KeytabSpec{Realm: e.lab.Realm, SAMAccountName: asaName + "$",
		Password: asaPassword, Principals: []string{asaName + "$", e.mailSPN}, KVNO: 2})
	if err != nil {
		t.Fatal(err)
	}
	b, err := kt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ours.keytab")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := e.lab.Command(context.Background(), "unused", "klist", "-k", "-e", path).CombinedOutput()
	if err != nil {
		t.Fatalf("klist -k: %v\n%s", err, out)
	}
	for _, want := range []string{"   2 " + e.mailSPN + "@" + e.lab.Realm + " (aes256-cts-hmac-sha1-96)",
		"   2 " + asaName + "$@" + e.lab.Realm + " (DEPRECATED:arcfour-hmac)"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("klist -k lacks %q:\n%s", want, out)
		}
	}
}

func TestNegotiateAccepted(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	tk, err := e.client().Impersonate(ctx, "alice", e.mailSPN)
	if err != nil {
		t.Fatal(err)
	}
	samba := &kerberos.Acceptor{Keytab: exportKeytab(t, e, asaName+"$"), Principal: asaName + "$"}
	ourKT, err := kerberos.KeytabFromPassword(kerberos.KeytabSpec{Realm: e.lab.Realm, SAMAccountName: asaName + "$",
		Password: asaPassword, Principals: []string{e.mailSPN}, KVNO: 2})
	if err != nil {
		t.Fatal(err)
	}
	ours := &kerberos.Acceptor{Keytab: ourKT} // found by the ticket's server name
	for name, acc := range map[string]*kerberos.Acceptor{"samba-tool keytab": samba, "KeytabFromPassword": ours} {
		h, err := kerberos.NegotiateHeader(tk)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(h, "Negotiate ") {
			t.Fatal(h)
		}
		id, err := acc.Accept(h)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if id.User != "alice" || id.Realm != e.lab.Realm || id.ReplyHeader != "" {
			t.Fatalf("%s: %+v", name, id)
		}
		// The ticket's validity, as the KDC set it (whole seconds).
		if !id.EndTime.Equal(tk.EndTime.Truncate(time.Second)) || id.StartTime.After(time.Now()) || !id.EndTime.After(time.Now()) {
			t.Fatalf("%s: ticket valid %v to %v, the KDC said until %v", name, id.StartTime, id.EndTime, tk.EndTime)
		}
		// The same header again is a replay.
		if _, err := acc.Accept(h); err == nil {
			t.Fatalf("%s: replayed header accepted", name)
		}
	}
	// Each header carries a fresh authenticator.
	h1, _ := kerberos.NegotiateHeader(tk)
	h2, _ := kerberos.NegotiateHeader(tk)
	if h1 == h2 {
		t.Fatal("two headers are identical")
	}
	// Garbage is refused.
	if _, err := samba.Accept("Negotiate AAAA"); err == nil {
		t.Fatal("garbage accepted")
	}
}

func TestNegotiateMutual(t *testing.T) {
	e := setup(t)
	tk, err := e.client().Impersonate(context.Background(), "bob", e.mailSPN)
	if err != nil {
		t.Fatal(err)
	}
	acc := &kerberos.Acceptor{Keytab: exportKeytab(t, e, asaName+"$"), Principal: asaName + "$"}
	n, err := kerberos.NewNegotiation(tk, true)
	if err != nil {
		t.Fatal(err)
	}
	id, err := acc.Accept(n.Header)
	if err != nil {
		t.Fatal(err)
	}
	if id.User != "bob" || id.ReplyHeader == "" {
		t.Fatalf("%+v", id)
	}
	if err := n.VerifyReply(id.ReplyHeader); err != nil {
		t.Fatalf("VerifyReply: %v", err)
	}
	// A reply made for another negotiation does not verify.
	other, _ := kerberos.NewNegotiation(tk, true)
	if err := other.VerifyReply(id.ReplyHeader); err == nil {
		t.Fatal("foreign AP-REP verified")
	}
	var ke *kerberos.Error
	if err := n.VerifyReply("Basic realm=x"); !errors.As(err, &ke) {
		t.Fatalf("want *kerberos.Error, got %v", err)
	}
}

// A mutual negotiation sets up security contexts on both sides that seal
// messages for each other, with the acceptor's subkey, and refuse
// reflected or altered tokens.
func TestSecurityContextSeal(t *testing.T) {
	e := setup(t)
	tk, err := e.client().Impersonate(context.Background(), "bob", e.mailSPN)
	if err != nil {
		t.Fatal(err)
	}
	acc := &kerberos.Acceptor{Keytab: exportKeytab(t, e, asaName+"$"), Principal: asaName + "$"}
	n, _ := kerberos.NewNegotiation(tk, true)
	if _, err := n.Context(); err == nil {
		t.Fatal("a context before VerifyReply")
	}
	id, server, err := acc.AcceptContext(n.Header)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.VerifyReply(id.ReplyHeader); err != nil {
		t.Fatal(err)
	}
	client, err := n.Context()
	if err != nil {
		t.Fatal(err)
	}
	for i, msg := range []string{"<s:Envelope/>", "", strings.Repeat("x", 5000)} {
		data, hdr, err := client.Seal([]byte(msg))
		if err != nil {
			t.Fatal(err)
		}
		if len(hdr) != 60 || len(data) != len(msg) {
			t.Fatalf("header %d data %d for %d bytes (want 60 and the message's length)", len(hdr), len(data), len(msg))
		}
		got, err := server.Unseal(data, hdr)
		if err != nil || string(got) != msg {
			t.Fatalf("%d: server unseal %q %v", i, got, err)
		}
		data, hdr, _ = server.Seal([]byte(msg + " reply"))
		if got, err := client.Unseal(data, hdr); err != nil || string(got) != msg+" reply" {
			t.Fatalf("%d: client unseal %q %v", i, got, err)
		}
		// Reflected back to its sender: refused.
		if _, err := server.Unseal(data, hdr); !errors.Is(err, kerberos.ErrUnseal) {
			t.Fatalf("reflected token: %v", err)
		}
	}
	data, hdr, _ := client.Seal([]byte("<s:Envelope/>"))
	data[0] ^= 1
	if _, err := server.Unseal(data, hdr); !errors.Is(err, kerberos.ErrUnseal) {
		t.Fatalf("altered token: %v", err)
	}
	// Without mutual authentication there is no context.
	plain, _ := kerberos.NewNegotiation(tk, false)
	if id, ctx, err := acc.AcceptContext(plain.Header); err != nil || ctx != nil || id.ReplyHeader != "" {
		t.Fatalf("without mutual: %v %v %+v", ctx, err, id)
	}
}

// TestNegotiateNoFalseReplays: headers made for one ticket as fast as four
// goroutines can are all accepted by a replay-checking acceptor. With
// authenticator times of microsecond resolution alone, two of them made in
// the same microsecond were refused as replays (seen at the gateway under
// 1,000 concurrent requests of one user).
func TestNegotiateNoFalseReplays(t *testing.T) {
	e := setup(t)
	tk, err := e.client().Impersonate(context.Background(), "alice", e.mailSPN)
	if err != nil {
		t.Fatal(err)
	}
	acc := &kerberos.Acceptor{Keytab: exportKeytab(t, e, asaName+"$"), Principal: asaName + "$"}
	const n = 4000
	headers := make(chan string, n)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n/4; i++ {
				h, err := kerberos.NegotiateHeader(tk)
				if err != nil {
					t.Error(err)
					return
				}
				headers <- h
			}
		}()
	}
	wg.Wait()
	close(headers)
	refused := 0
	for h := range headers {
		if _, err := acc.Accept(h); err != nil {
			refused++
		}
	}
	if refused != 0 {
		t.Errorf("%d of %d fresh headers refused", refused, n)
	}
}
