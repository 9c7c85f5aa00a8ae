package kerberos

import (
	"testing"

	"github.com/jcmturner/gokrb5/v8/types"
)

// FuzzPAC feeds PACs to the reader Account uses (gokrb5's NDR decoder and
// its signature check): a KDC's PAC is outside input, and a panic in the
// decoder would be the gateway's. Seeds: testdata/fuzz/FuzzPAC (a PAC from
// gokrb5's test vectors).
func FuzzPAC(f *testing.F) {
	key := types.EncryptionKey{KeyType: 18, KeyValue: make([]byte, 32)}
	f.Fuzz(func(t *testing.T, b []byte) {
		var a *Account
		err := safely(func() (err error) { a, err = accountFromPAC(b, key); return err })
		if err == nil && (a == nil || !validName(a.Name)) {
			t.Fatalf("accepted %+v", a)
		}
	})
}
