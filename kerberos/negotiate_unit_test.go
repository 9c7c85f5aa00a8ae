package kerberos

import (
	"bytes"
	"encoding/asn1"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/iana/flags"
	"github.com/jcmturner/gokrb5/v8/iana/keyusage"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"
)

func testTicket(t *testing.T) *Ticket {
	t.Helper()
	svcKey := types.EncryptionKey{KeyType: etypeID.AES256_CTS_HMAC_SHA1_96, KeyValue: bytes.Repeat([]byte{7}, 32)}
	enc, err := crypto.GetEncryptedData([]byte("not a real enc-part"), svcKey, keyusage.KDC_REP_TICKET, 3)
	if err != nil {
		t.Fatal(err)
	}
	tkt := messages.Ticket{TktVNO: 5, Realm: "CORP.EXAMPLE.TEST",
		SName:   types.PrincipalName{NameType: nametype.KRB_NT_SRV_INST, NameString: []string{"http", "mail.corp.example.test"}},
		EncPart: enc}
	return &Ticket{Ticket: tkt, Client: types.PrincipalName{NameType: 1, NameString: []string{"alice"}}, ClientRealm: "CORP.EXAMPLE.TEST",
		SessionKey: types.EncryptionKey{KeyType: etypeID.AES256_CTS_HMAC_SHA1_96, KeyValue: bytes.Repeat([]byte{9}, 32)},
		EndTime:    time.Now().Add(time.Hour)}
}

// Our hand-built DER is what gokrb5's parsers (and so any ASN.1 reader) expect.
func TestNegotiateDERParses(t *testing.T) {
	tk := testTicket(t)
	for _, mutual := range []bool{false, true} {
		n, err := NewNegotiation(tk, mutual)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(n.Header, "Negotiate "))
		if err != nil {
			t.Fatal(err)
		}
		var tok spnego.SPNEGOToken
		if err := tok.Unmarshal(raw); err != nil || !tok.Init {
			t.Fatalf("SPNEGO: %v", err)
		}
		if len(tok.NegTokenInit.MechTypes) != 2 || !tok.NegTokenInit.MechTypes[0].Equal([]int{1, 2, 840, 113554, 1, 2, 2}) ||
			!tok.NegTokenInit.MechTypes[1].Equal([]int{1, 2, 840, 48018, 1, 2, 2}) {
			t.Fatalf("mech types %v", tok.NegTokenInit.MechTypes)
		}
		body, err := gssUnwrap(tokAPReq, tok.NegTokenInit.MechTokenBytes)
		if err != nil {
			t.Fatal(err)
		}
		var ap messages.APReq
		if err := ap.Unmarshal(body); err != nil {
			t.Fatalf("AP-REQ: %v", err)
		}
		if types.IsFlagSet(&ap.APOptions, flags.APOptionMutualRequired) != mutual || ap.Ticket.SName.PrincipalNameString() != "http/mail.corp.example.test" {
			t.Fatalf("AP-REQ fields: %+v", ap.APOptions)
		}
		if err := ap.DecryptAuthenticator(tk.SessionKey); err != nil {
			t.Fatal(err)
		}
		if ap.Authenticator.CName.PrincipalNameString() != "alice" || ap.Authenticator.Cksum.CksumType != gssChecksumType {
			t.Fatalf("authenticator %+v", ap.Authenticator)
		}
	}
}

func TestTLVLengths(t *testing.T) {
	for _, n := range []int{0, 127, 128, 255, 256, 65535, 65536, 1 << 24} {
		b := tlv(0x04, make([]byte, n))
		hdr := len(b) - n
		var want int
		switch {
		case n < 0x80:
			want = 2
		case n < 0x100:
			want = 3
		case n < 0x10000:
			want = 4
		case n < 0x1000000:
			want = 5
		default:
			want = 6
		}
		if hdr != want {
			t.Errorf("length %d: header %d bytes, want %d", n, hdr, want)
		}
	}
}

// Values holding secrets format without them, whatever the verb.
func TestFormatHidesSecrets(t *testing.T) {
	tk := testTicket(t)
	key := fmt.Sprintf("%x", tk.SessionKey.KeyValue)
	spec := KeytabSpec{Realm: "R", SAMAccountName: "svc", Password: "Sekr1t-Passw0rd!"}
	cfg, _ := NewConfig("CORP.EXAMPLE.TEST", "127.0.0.1")
	c := NewWithPassword("svc", "CORP.EXAMPLE.TEST", "Sekr1t-Passw0rd!", cfg)
	for _, v := range []any{tk, *tk, spec, &spec, c} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			out := fmt.Sprintf(verb, v)
			if strings.Contains(out, "Sekr1t") || strings.Contains(out, key) || strings.Contains(out, fmt.Sprint(tk.SessionKey.KeyValue)) {
				t.Errorf("%s of %T: %s", verb, v, out)
			}
		}
	}
}

// The authenticator encryption with cached derived keys is RFC 3962's:
// gokrb5's decryption (which derives the keys itself) opens it, for both
// AES-SHA1 types, every time, and the confounder differs each time.
func TestEncryptAuthenticatorCachedKeys(t *testing.T) {
	for _, kt := range []int32{etypeID.AES128_CTS_HMAC_SHA1_96, etypeID.AES256_CTS_HMAC_SHA1_96, etypeID.RC4_HMAC} {
		size := map[int32]int{17: 16, 18: 32, 23: 16}[kt]
		tk := &Ticket{state: &ticketState{}, SessionKey: types.EncryptionKey{KeyType: kt, KeyValue: bytes.Repeat([]byte{5}, size)}}
		var last []byte
		for i := 0; i < 3; i++ {
			msg := []byte(fmt.Sprintf("authenticator %d, of some length to cross blocks", i))
			ed, err := tk.encryptAuthenticator(msg)
			if err != nil {
				t.Fatal(err)
			}
			plain, err := crypto.DecryptEncPart(ed, tk.SessionKey, keyusage.AP_REQ_AUTHENTICATOR)
			if err != nil || !bytes.Equal(plain, msg) {
				t.Fatalf("etype %d: %q %v", kt, plain, err)
			}
			if bytes.Equal(ed.Cipher, last) {
				t.Fatal("same ciphertext twice")
			}
			last = ed.Cipher
		}
	}
}

// authenticatorDER encodes exactly what gokrb5's Marshal does, with and
// without a subkey, for names, realms, integers and times of every shape.
func TestAuthenticatorDERMatchesGokrb5(t *testing.T) {
	names := []types.PrincipalName{{NameType: 1, NameString: []string{"alice"}}, {NameType: 10, NameString: []string{"alice@corp.example.test"}},
		{NameType: -128, NameString: []string{"a", strings.Repeat("b", 300)}}}
	for i, n := range names {
		for _, mutual := range []bool{false, true} {
			a, err := types.NewAuthenticator(strings.Repeat("R", 1+i*100), n)
			if err != nil {
				t.Fatal(err)
			}
			a.Cusec = []int{0, 127, 128, 999999}[i%4]
			a.Cksum = types.Checksum{CksumType: 0x8003, Checksum: make([]byte, 24)}
			if mutual {
				a.GenerateSeqNumberAndSubKey(etypeID.AES256_CTS_HMAC_SHA1_96, 32)
			}
			want, err := a.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := authenticatorDER(&a, false)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%v mutual=%v:\n got %x\nwant %x", n, mutual, got, want)
			}
		}
	}
	for _, ed := range []types.EncryptedData{{EType: 18, Cipher: make([]byte, 300)}, {EType: 23, KVNO: 300, Cipher: []byte{1}}} {
		want, err := asn1.Marshal(ed)
		if err != nil {
			t.Fatal(err)
		}
		r := newRevDER(8)
		r.encryptedData(ed)
		if got := r.out(); !bytes.Equal(got, want) {
			t.Errorf("EncryptedData %d/%d: %x, want %x", ed.EType, ed.KVNO, got, want)
		}
	}
	for _, v := range []int64{0, 1, 127, 128, 255, 256, -1, -128, -129, 1 << 31, 1<<32 - 1, -(1 << 31)} {
		want, _ := asn1.Marshal(v)
		r := newRevDER(1) // too small: the buffer grows
		r.int(v)
		if got := r.out(); !bytes.Equal(got, want) {
			t.Errorf("%d: %x, want %x", v, got, want)
		}
	}
}
