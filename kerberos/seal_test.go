package kerberos

import (
	"bytes"
	"errors"
	"testing"

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
