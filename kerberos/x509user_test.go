package kerberos

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"
)

var aesKey = types.EncryptionKey{KeyType: etypeID.AES256_CTS_HMAC_SHA1_96, KeyValue: bytes.Repeat([]byte{3}, 32)}

func TestPAS4UX509User(t *testing.T) {
	user := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: []string{"alice"}}
	p, err := newS4UX509User(user, "CORP.EXAMPLE.TEST", 12345, aesKey)
	if err != nil {
		t.Fatal(err)
	}
	der, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var back s4uX509User
	if err := back.Unmarshal(der); err != nil {
		t.Fatal(err)
	}
	if back.UserID.Nonce != 12345 || back.UserID.CRealm != "CORP.EXAMPLE.TEST" || back.UserID.CName.NameString[0] != "alice" ||
		back.UserID.Options.Bytes[0] != 0x20 || back.Cksum.CksumType != 16 {
		t.Fatalf("round trip: %+v", back)
	}
	// The request checksum uses key usage 26, so it is no valid reply echo (27).
	pa := []types.PAData{{PADataType: paS4UX509User, PADataValue: der}}
	if err := checkS4UEcho(pa, 12345, aesKey); !errors.Is(err, ErrBadReply) {
		t.Fatalf("request checksum accepted as a reply: %v", err)
	}
	// A KDC's echo, signed with usage 27, verifies; a wrong nonce does not.
	echo := back
	echo.Cksum, _ = s4uChecksum(echo.UserID, aesKey, keyUsageS4URep)
	eb, _ := echo.Marshal()
	pa = []types.PAData{{PADataType: paS4UX509User, PADataValue: eb}}
	if err := checkS4UEcho(pa, 12345, aesKey); err != nil {
		t.Fatal(err)
	}
	if err := checkS4UEcho(pa, 999, aesKey); !errors.Is(err, ErrBadReply) {
		t.Fatal("nonce mismatch accepted")
	}
	if err := checkS4UEcho(nil, 1, aesKey); err != nil {
		t.Fatal("a reply without the echo (Samba 4.17) must be accepted")
	}
}

// A KDC that does not know PA-S4U-X509-USER: S4U2Self retries with
// PA-FOR-USER alone and does not send it again.
func TestS4UX509Fallback(t *testing.T) {
	c := &Client{realm: "CORP.EXAMPLE.TEST", now: time.Now,
		cname: types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: []string{"svc"}},
		tgt: &Ticket{SessionKey: aesKey, EndTime: time.Now().Add(time.Hour),
			Ticket: messages.Ticket{TktVNO: 5, Realm: "CORP.EXAMPLE.TEST",
				SName:   types.PrincipalName{NameType: nametype.KRB_NT_SRV_INST, NameString: []string{"krbtgt", "CORP.EXAMPLE.TEST"}},
				EncPart: types.EncryptedData{EType: etypeID.AES256_CTS_HMAC_SHA1_96, Cipher: []byte{1}}}},
	}
	c.cfg, _ = NewConfig("CORP.EXAMPLE.TEST", "127.0.0.1")
	var mu sync.Mutex
	var sent [][]int32
	c.send = func(ctx context.Context, realm string, b []byte) ([]byte, string, error) {
		var req messages.TGSReq
		if err := req.Unmarshal(b); err != nil {
			t.Fatal(err)
		}
		var kinds []int32
		for _, pa := range req.PAData {
			kinds = append(kinds, pa.PADataType)
		}
		mu.Lock()
		sent = append(sent, kinds)
		mu.Unlock()
		code := CodeCPrincipalUnknown
		if req.PAData.Contains(paS4UX509User) {
			code = CodePADataTypeNoSupp
		}
		k := messages.NewKRBError(req.ReqBody.SName, realm, code, "")
		rep, err := k.Marshal()
		return rep, "stub", err
	}
	for i := 0; i < 2; i++ {
		if _, err := c.S4U2Self(context.Background(), "alice"); !errors.Is(err, ErrClientUnknown) {
			t.Fatalf("want the second answer, got %v", err)
		}
	}
	want := [][]int32{{1, 129, 130}, {1, 129}, {1, 129}}
	if len(sent) != 3 {
		t.Fatalf("requests %v", sent)
	}
	for i := range want {
		if len(sent[i]) != len(want[i]) {
			t.Fatalf("requests %v, want %v", sent, want)
		}
		for j := range want[i] {
			if sent[i][j] != want[i][j] {
				t.Fatalf("requests %v, want %v", sent, want)
			}
		}
	}
}
