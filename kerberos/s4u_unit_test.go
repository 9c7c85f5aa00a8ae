package kerberos

import (
	"encoding/hex"
	"testing"

	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/types"
)

// The test vector of DESIGN.md section 3: key bytes 00..1f as AES256,
// user alice, realm CORP.EXAMPLE.TEST.
func TestPAForUserVector(t *testing.T) {
	key := types.EncryptionKey{KeyType: etypeID.AES256_CTS_HMAC_SHA1_96, KeyValue: make([]byte, 32)}
	for i := range key.KeyValue {
		key.KeyValue[i] = byte(i)
	}
	user := types.PrincipalName{NameType: nametype.KRB_NT_PRINCIPAL, NameString: []string{"alice"}}
	p, err := newPAForUser(user, "CORP.EXAMPLE.TEST", key)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(p.Cksum.Checksum); got != "5991e5c15699f8b508d35e2cb9fdc4ef" {
		t.Fatalf("checksum %s", got)
	}
	der, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	const want = "3053a0123010a003020101a10930071b05616c696365a1131b11434f52502e4558414d504c452e54455354a21c301aa0040202ff76a11204105991e5c15699f8b508d35e2cb9fdc4efa30a1b084b65726265726f73"
	if got := hex.EncodeToString(der); got != want {
		t.Fatalf("DER\n got %s\nwant %s", got, want)
	}
	var back paForUser
	if err := back.Unmarshal(der); err != nil || back.UserRealm != "CORP.EXAMPLE.TEST" || back.UserName.NameString[0] != "alice" ||
		hex.EncodeToString(back.Cksum.Checksum) != "5991e5c15699f8b508d35e2cb9fdc4ef" || back.AuthPackage != "Kerberos" {
		t.Fatalf("round trip: %+v %v", back, err)
	}
}

func TestParseUser(t *testing.T) {
	for in, want := range map[string]struct {
		typ  int32
		name string
	}{
		"alice":                    {nametype.KRB_NT_PRINCIPAL, "alice"},
		"alice@CORP.EXAMPLE.TEST":  {nametype.KRB_NT_PRINCIPAL, "alice"},
		"alice@corp.example.test":  {nametype.KRB_NT_ENTERPRISE, "alice@corp.example.test"},
		"alice.smith@mail.example": {nametype.KRB_NT_ENTERPRISE, "alice.smith@mail.example"},
	} {
		pn, err := ParseUser(in, "CORP.EXAMPLE.TEST")
		if err != nil || pn.NameType != want.typ || len(pn.NameString) != 1 || pn.NameString[0] != want.name {
			t.Errorf("ParseUser(%q) = %+v, %v", in, pn, err)
		}
	}
	for _, bad := range []string{"", "@x", "x@", "a\nb"} {
		if _, err := ParseUser(bad, "R"); err == nil {
			t.Errorf("ParseUser(%q) accepted", bad)
		}
	}
}
