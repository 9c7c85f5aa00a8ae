package kerberos

import (
	"bytes"
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
