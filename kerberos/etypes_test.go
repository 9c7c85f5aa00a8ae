package kerberos

import (
	"errors"
	"slices"
	"testing"

	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
)

// By default the client asks for AES only and refuses anything weaker that
// a KDC sends anyway; AllowRC4 keeps the configuration's list and accepts.
func TestAESOnlyByDefault(t *testing.T) {
	conf := []int32{etypeID.AES256_CTS_HMAC_SHA1_96, etypeID.RC4_HMAC, etypeID.AES128_CTS_HMAC_SHA1_96, etypeID.DES_CBC_MD5}
	c := &Client{}
	if got := c.etypes(conf); !slices.Equal(got, []int32{etypeID.AES256_CTS_HMAC_SHA1_96, etypeID.AES128_CTS_HMAC_SHA1_96}) {
		t.Errorf("asked for %v", got)
	}
	if got := c.etypes([]int32{etypeID.RC4_HMAC}); len(got) != 2 || !IsAES(got[0]) {
		t.Errorf("an RC4-only configuration: asked for %v", got)
	}
	for _, e := range []int32{etypeID.RC4_HMAC, etypeID.RC4_HMAC_EXP, etypeID.DES_CBC_CRC, etypeID.DES3_CBC_SHA1_KD} {
		if err := c.strongEnough(e, "the ticket"); !errors.Is(err, ErrWeakEncryption) {
			t.Errorf("etype %d: %v", e, err)
		}
	}
	for _, e := range []int32{etypeID.AES128_CTS_HMAC_SHA1_96, etypeID.AES256_CTS_HMAC_SHA384_192} {
		if err := c.strongEnough(e, "the ticket"); err != nil {
			t.Errorf("etype %d: %v", e, err)
		}
	}
	c.AllowRC4 = true
	if err := c.strongEnough(etypeID.RC4_HMAC, "the ticket"); err != nil || !slices.Equal(c.etypes(conf), conf) {
		t.Errorf("AllowRC4: %v, asked for %v", err, c.etypes(conf))
	}
}
