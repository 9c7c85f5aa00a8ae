package kerberos

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"
)

// FuzzKDCReply feeds arbitrary bytes to the code that reads a KDC's answer:
// KRB-ERROR detection and decoding, TGS-REP decoding, decryption and checks.
// It must never panic, and never accept a reply it cannot decrypt.
// Seed corpus: testdata/fuzz/FuzzKDCReply (real replies from the lab KDC).
func FuzzKDCReply(f *testing.F) {
	key := types.EncryptionKey{KeyType: etypeID.AES256_CTS_HMAC_SHA1_96, KeyValue: make([]byte, 32)}
	body := messages.KDCReqBody{Realm: "CORP.EXAMPLE.TEST", Nonce: 42,
		SName: types.PrincipalName{NameType: nametype.KRB_NT_SRV_INST, NameString: []string{"http", "mail"}}}
	f.Add([]byte{0x7e, 0x03, 0x02, 0x01, 0x05})
	f.Add([]byte{0x6d, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		if k, ok := asKRBError(b); ok {
			e := kdcError("S4U2Proxy", "http/mail", "127.0.0.1:88", k, time.Unix(0, 0))
			_ = e.Error()
			return
		}
		krbErrorCode(b)
		var rep messages.TGSRep
		tk, err := verifyTGSRep(b, &rep, key, body, time.Unix(0, 0), "S4U2Proxy", "http/mail")
		if err == nil {
			checkS4UEcho(rep.PAData, body.Nonce, key)
		}
		if err == nil && tk == nil {
			t.Fatal("nil ticket without error")
		}
	})
}

// FuzzNegotiate feeds arbitrary Authorization and WWW-Authenticate values to
// the acceptor and to the mutual-auth check. Seed corpus:
// testdata/fuzz/FuzzNegotiate.
func FuzzNegotiate(f *testing.F) {
	f.Add("Negotiate " + base64.StdEncoding.EncodeToString([]byte{0x60, 0x00}))
	f.Add("Negotiate oYGJMIGGoAMKAQChCwYJKoZIgvcSAQICon4EfGB6BgkqhkiG9xIBAgICAG9rMGmgAwIBBaEDAgEPol0wW6ADAgESolQEUg==")
	f.Add("Basic YWxpY2U6cHc=")
	kt := keytab.New()
	_ = kt.AddEntry("http/mail", "CORP.EXAMPLE.TEST", "pw", time.Unix(0, 0), 1, etypeID.AES256_CTS_HMAC_SHA1_96)
	acc := &Acceptor{Keytab: kt}
	n := &Negotiation{mutual: true, key: types.EncryptionKey{KeyType: etypeID.AES256_CTS_HMAC_SHA1_96, KeyValue: make([]byte, 32)}}
	f.Fuzz(func(t *testing.T, h string) {
		if id, err := acc.Accept(h); err == nil {
			t.Fatalf("accepted %q as %+v", h, id)
		}
		if err := n.VerifyReply(h); err == nil {
			t.Fatalf("verified %q", h)
		}
		gssUnwrap(tokAPReq, []byte(h))
	})
}
