package ad

import (
	"bytes"
	"testing"

	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/types"
)

// FuzzUnwrapToken feeds the DC's SASL wrap tokens to unwrapToken: never a
// panic (gokrb5 panics on ciphertext shorter than its checksum, which a
// short sealed token used to reach). Seed corpus: testdata/fuzz/FuzzUnwrapToken.
func FuzzUnwrapToken(f *testing.F) {
	key := types.EncryptionKey{KeyType: etypeID.AES256_CTS_HMAC_SHA1_96, KeyValue: bytes.Repeat([]byte{1}, 32)}
	f.Add([]byte{0x05, 0x04, wrapSentByAcceptor | wrapSealed, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3})
	f.Fuzz(func(t *testing.T, tok []byte) {
		if _, payload, err := unwrapToken(tok, key, types.EncryptionKey{}); err == nil && len(payload) > len(tok) {
			t.Fatalf("payload longer than its token")
		}
	})
}
