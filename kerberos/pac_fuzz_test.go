package kerberos

import (
	"testing"

	"github.com/jcmturner/gokrb5/v8/types"
)

// FuzzPAC feeds PACs to the reader Account uses: a KDC's PAC is outside
// input. The signature check stops most inputs, so the buffer list and
// UPN_DNS_INFO readers are fuzzed behind it as well. Seeds:
// testdata/fuzz/FuzzPAC (a PAC of the lab's Samba 4.22 KDC, and one of
// gokrb5's test vectors).
func FuzzPAC(f *testing.F) {
	key := types.EncryptionKey{KeyType: 18, KeyValue: make([]byte, 32)}
	f.Fuzz(func(t *testing.T, b []byte) {
		var a *Account
		if err := safely(func() (err error) { a, err = accountFromPAC(b, key); return err }); err == nil && !validName(a.Name) {
			t.Fatalf("accepted %+v", a)
		}
		bufs, err := pacBuffers(b)
		if err != nil {
			return
		}
		for _, buf := range bufs {
			if len(buf.data) != 0 && &buf.data[0] != &b[buf.off] {
				t.Fatal("buffer not within the PAC")
			}
			var a Account
			if readUPNDNSInfo(buf.data, &a) == nil && len(a.Name)+len(a.UPN)+len(a.SID) > 3*len(buf.data)+64 {
				t.Fatalf("%d bytes gave %+v", len(buf.data), a)
			}
		}
	})
}
