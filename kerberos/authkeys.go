package kerberos

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"sync"

	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/crypto/common"
	"github.com/jcmturner/gokrb5/v8/crypto/etype"
	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/iana/keyusage"
	"github.com/jcmturner/gokrb5/v8/types"
)

// authKeys are the encryption and integrity keys derived from a ticket's
// session key for authenticators (key usage 11). gokrb5 derives both again
// for every message (two n-fold AES derivations, a fifth of a Negotiate
// header's cost); a gateway makes a header per request with the same key.
type authKeys struct {
	once   sync.Once
	et     etype.EType
	ke, ki []byte
	ok     bool
}

// encryptAuthenticator encrypts an authenticator under t's session key as
// RFC 3962 does (confounder, AES-CTS with Ke, HMAC-SHA1-96 with Ki over
// the plaintext), with the derived keys cached for AES-SHA1 session keys.
// Other etypes, and tickets built by callers, take gokrb5's path.
func (t *Ticket) encryptAuthenticator(plain []byte) (types.EncryptedData, error) {
	kt := t.SessionKey.KeyType
	if t.state == nil || (kt != etypeID.AES128_CTS_HMAC_SHA1_96 && kt != etypeID.AES256_CTS_HMAC_SHA1_96) {
		return crypto.GetEncryptedData(plain, t.SessionKey, keyusage.AP_REQ_AUTHENTICATOR, 0)
	}
	k := &t.state.keys
	k.once.Do(func() {
		et, err := crypto.GetEtype(kt)
		if err != nil {
			return
		}
		ke, err := et.DeriveKey(t.SessionKey.KeyValue, common.GetUsageKe(keyusage.AP_REQ_AUTHENTICATOR))
		if err != nil {
			return
		}
		ki, err := et.DeriveKey(t.SessionKey.KeyValue, common.GetUsageKi(keyusage.AP_REQ_AUTHENTICATOR))
		if err != nil {
			return
		}
		k.et, k.ke, k.ki, k.ok = et, ke, ki, true
	})
	if !k.ok {
		return crypto.GetEncryptedData(plain, t.SessionKey, keyusage.AP_REQ_AUTHENTICATOR, 0)
	}
	conf := k.et.GetConfounderByteSize()
	p := make([]byte, conf+len(plain))
	if _, err := rand.Read(p[:conf]); err != nil {
		return types.EncryptedData{}, err
	}
	copy(p[conf:], plain)
	_, ct, err := k.et.EncryptData(k.ke, p)
	if err != nil {
		return types.EncryptedData{}, err
	}
	mac := hmac.New(sha1.New, k.ki)
	mac.Write(p)
	return types.EncryptedData{EType: kt, Cipher: append(ct, mac.Sum(nil)[:k.et.GetHMACBitLength()/8]...)}, nil
}
