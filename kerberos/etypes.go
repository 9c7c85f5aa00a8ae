package kerberos

import (
	"fmt"

	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
)

// IsAES reports whether an encryption type is AES (RFC 3962, RFC 8009):
// what a client accepts without AllowRC4, and what the 2026 RC4 cut-off
// leaves working.
func IsAES(etype int32) bool {
	switch etype {
	case etypeID.AES128_CTS_HMAC_SHA1_96, etypeID.AES256_CTS_HMAC_SHA1_96,
		etypeID.AES128_CTS_HMAC_SHA256_128, etypeID.AES256_CTS_HMAC_SHA384_192:
		return true
	}
	return false
}

// etypes is the encryption types to ask the KDC for: the configuration's,
// AES only unless AllowRC4.
func (c *Client) etypes(configured []int32) []int32 {
	if c.AllowRC4 {
		return configured
	}
	var out []int32
	for _, e := range configured {
		if IsAES(e) {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		out = []int32{etypeID.AES256_CTS_HMAC_SHA1_96, etypeID.AES128_CTS_HMAC_SHA1_96}
	}
	return out
}

// strongEnough refuses an encryption type weaker than AES for what,
// unless AllowRC4.
func (c *Client) strongEnough(e int32, what string) error {
	if c.AllowRC4 || IsAES(e) {
		return nil
	}
	return fmt.Errorf("%w: %s is %s: the account's keys or msDS-SupportedEncryptionTypes allow no AES; set them to AES (24) and reset its password (AllowRC4 accepts it until then)",
		ErrWeakEncryption, what, ETypeName(e))
}

// ETypeName names an encryption type as an administrator reads it:
// "AES256", "RC4-HMAC (23)".
func ETypeName(e int32) string {
	switch e {
	case etypeID.AES256_CTS_HMAC_SHA1_96:
		return "AES256"
	case etypeID.AES128_CTS_HMAC_SHA1_96:
		return "AES128"
	case etypeID.AES128_CTS_HMAC_SHA256_128:
		return "AES128-SHA256"
	case etypeID.AES256_CTS_HMAC_SHA384_192:
		return "AES256-SHA384"
	case etypeID.RC4_HMAC:
		return "RC4-HMAC (23)"
	case etypeID.RC4_HMAC_EXP:
		return "RC4-HMAC-EXP (24)"
	case etypeID.DES_CBC_CRC, etypeID.DES_CBC_MD4, etypeID.DES_CBC_MD5:
		return fmt.Sprintf("DES (%d)", e)
	case etypeID.DES3_CBC_SHA1_KD:
		return "DES3 (16)"
	}
	return fmt.Sprintf("etype %d", e)
}
