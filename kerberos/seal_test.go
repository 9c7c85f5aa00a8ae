package kerberos

import (
	"bytes"
	"errors"
	"testing"

	"github.com/jcmturner/gokrb5/v8/gssapi"
	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/types"
)

func testContexts(t testing.TB) (initiator, acceptor *SecurityContext) {
	session := types.EncryptionKey{KeyType: etypeID.AES256_CTS_HMAC_SHA1_96, KeyValue: bytes.Repeat([]byte{1}, 32)}
	sub := types.EncryptionKey{KeyType: etypeID.AES256_CTS_HMAC_SHA1_96, KeyValue: bytes.Repeat([]byte{2}, 32)}
	i, err := newSecurityContext(true, session, types.EncryptionKey{}, sub, 7)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := newSecurityContext(false, session, types.EncryptionKey{}, sub, 9)
	return i, a
}

// The key choice of RFC 4121: acceptor subkey, else initiator subkey, else
// the session key; and RC4 cannot seal.
func TestSecurityContextKeys(t *testing.T) {
	aes := func(b byte) types.EncryptionKey {
		return types.EncryptionKey{KeyType: etypeID.AES128_CTS_HMAC_SHA1_96, KeyValue: bytes.Repeat([]byte{b}, 16)}
	}
	none := types.EncryptionKey{}
	for _, c := range []struct {
		init, acc types.EncryptionKey
		want      byte
		accFlag   bool
	}{{none, none, 1, false}, {aes(2), none, 2, false}, {aes(2), aes(3), 3, true}} {
		ctx, err := newSecurityContext(true, aes(1), c.init, c.acc, 0)
		if err != nil || ctx.key.KeyValue[0] != c.want || ctx.acceptorSubkey != c.accFlag {
			t.Fatalf("%+v: key %v flag %v err %v", c, ctx.key.KeyValue[:1], ctx.acceptorSubkey, err)
		}
	}
	rc4 := types.EncryptionKey{KeyType: etypeID.RC4_HMAC, KeyValue: make([]byte, 16)}
	if _, err := newSecurityContext(true, rc4, none, none, 0); err == nil {
		t.Fatal("RC4 context")
	}
	// The token's sequence number and flags are what RFC 4121 says.
	i, a := testContexts(t)
	data, hdr, _ := i.Seal([]byte("x"))
	if hdr[2] != wrapSealed|wrapAcceptorSubkey || hdr[7] != 28 || hdr[15] != 7 || len(data) != 1 {
		t.Fatalf("initiator header % x", hdr[:16])
	}
	data, hdr, _ = a.Seal([]byte("x"))
	if hdr[2] != wrapSealed|wrapAcceptorSubkey|wrapSentByAcceptor || hdr[15] != 9 {
		t.Fatalf("acceptor header % x", hdr[:16])
	}
	if _, err := i.Unseal(data, hdr); err != nil {
		t.Fatal(err)
	}
}

// FuzzUnseal feeds a peer's sealed WinRM message (header and data, split
// anywhere) to Unseal: it must refuse or decrypt, never panic, and never
// return a message it did not authenticate.
// Seed corpus: testdata/fuzz/FuzzUnseal.
func FuzzUnseal(f *testing.F) {
	f.Fuzz(func(t *testing.T, tok []byte, split uint8) {
		_, a := testContexts(t)
		n := int(split)
		if n > len(tok) {
			n = len(tok)
		}
		msg, err := a.Unseal(tok[n:], tok[:n])
		if err == nil && !bytes.HasPrefix(tok, []byte{0x05, 0x04}) {
			t.Fatalf("unsealed %q from a non-token", msg)
		}
		if err != nil && !errors.Is(err, ErrUnseal) {
			t.Fatalf("error outside ErrUnseal: %v", err)
		}
	})
}

// BenchmarkSealUnseal is one WinRM-sized message (2 KiB) sealed by the
// initiator and unsealed by the acceptor.
func BenchmarkSealUnseal(b *testing.B) {
	i, a := testContexts(b)
	msg := bytes.Repeat([]byte("<s:Envelope/>"), 160)
	b.ReportAllocs()
	for n := 0; n < b.N; n++ {
		data, hdr, _ := i.Seal(msg)
		if _, err := a.Unseal(data, hdr); err != nil {
			b.Fatal(err)
		}
	}
}

// Signed wrap tokens (SASL GSSAPI's security-layer negotiation): ours
// against gokrb5's independent WrapToken both ways, with a rotation count,
// and the refusals.
func TestWrapUnwrap(t *testing.T) {
	i, a := testContexts(t)
	// gokrb5 as the acceptor: its token, rotated by 5, opens with ours.
	wt := gssapi.WrapToken{Flags: wrapSentByAcceptor | wrapAcceptorSubkey, EC: 12, SndSeqNum: 3, Payload: []byte{1, 0, 0, 0}}
	if err := wt.SetCheckSum(a.key, usageAcceptorSeal); err != nil {
		t.Fatal(err)
	}
	tok, err := wt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	body := append([]byte(nil), tok[16:]...)
	rot := append(append([]byte(nil), body[len(body)-5:]...), body[:len(body)-5]...)
	rotated := append(append([]byte(nil), tok[:16]...), rot...)
	rotated[7] = 5
	for _, tk := range [][]byte{tok, rotated} {
		if p, err := i.Unwrap(tk); err != nil || !bytes.Equal(p, []byte{1, 0, 0, 0}) {
			t.Fatalf("gokrb5's token: %x %v", p, err)
		}
	}
	// Ours as the initiator: gokrb5 verifies it.
	out, err := i.Wrap([]byte{1, 0, 0, 0, 'u'})
	if err != nil {
		t.Fatal(err)
	}
	var back gssapi.WrapToken
	if err := back.Unmarshal(out, false); err != nil {
		t.Fatal(err)
	}
	if ok, err := back.Verify(i.key, usageInitiatorSeal); !ok || string(back.Payload) != "\x01\x00\x00\x00u" {
		t.Fatalf("gokrb5 rejects our wrap token: %v", err)
	}
	if p, err := a.Unwrap(out); err != nil || p[4] != 'u' {
		t.Fatalf("acceptor: %v", err)
	}
	// Sealed tokens unwrap too.
	data, hdr, _ := a.Seal([]byte("sealed"))
	if p, err := i.Unwrap(append(hdr, data...)); err != nil || string(p) != "sealed" {
		t.Fatalf("sealed: %q %v", p, err)
	}
	// Refusals: reflected, tampered, truncated.
	if _, err := i.Unwrap(out); !errors.Is(err, ErrUnseal) {
		t.Fatalf("reflected token: %v", err)
	}
	bad := append([]byte(nil), tok...)
	bad[17] ^= 1
	if _, err := i.Unwrap(bad); !errors.Is(err, ErrUnseal) {
		t.Fatalf("tampered token: %v", err)
	}
	if _, err := i.Unwrap(tok[:20]); !errors.Is(err, ErrUnseal) {
		t.Fatalf("truncated token: %v", err)
	}
}

// FuzzUnwrap feeds arbitrary tokens to Unwrap, as a DC's SASL offer
// arrives: refuse or return an authenticated payload, never panic (gokrb5
// panics on ciphertext shorter than its checksum, which a short sealed
// token used to reach). Seed corpus: testdata/fuzz/FuzzUnwrap.
func FuzzUnwrap(f *testing.F) {
	f.Add([]byte{0x05, 0x04, wrapSentByAcceptor | wrapSealed, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3})
	f.Fuzz(func(t *testing.T, tok []byte) {
		i, _ := testContexts(t)
		p, err := i.Unwrap(tok)
		if err == nil && len(p) > len(tok) {
			t.Fatalf("payload longer than its token")
		}
		if err != nil && !errors.Is(err, ErrUnseal) {
			t.Fatalf("error outside ErrUnseal: %v", err)
		}
	})
}
