package seg

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"math/big"
	"testing"
)

// TestSameSerial: a serial as altSecurityIdentities writes it (reversed
// bytes, with or without the DER sign byte) matches exactly its own
// certificate's serial and no other.
func TestSameSerial(t *testing.T) {
	for _, tc := range []struct {
		serial   int64
		reversed string
		want     bool
	}{
		{0xA1B2, "b2a100", true}, // Windows' form: the sign byte kept
		{0xA1B2, "b2a1", true},
		{0x1234, "3412", true},
		{0x12, "0012", false}, // the entry is 0x1200
		{0x1200, "12", false},
		{0x01, "000001", false}, // the entry is 0x010000
		{0x1234, "341200", false},
		{0x1234, "3412ff", false},
		{0x7f, "7f00", false}, // a sign byte where none belongs
	} {
		c := &x509.Certificate{SerialNumber: big.NewInt(tc.serial)}
		r, _ := hex.DecodeString(tc.reversed)
		if got := sameSerial(r, c); got != tc.want {
			t.Errorf("serial %#x, entry %s: %v", tc.serial, tc.reversed, got)
		}
	}
}

// TestSameIssuer: the issuer as Windows writes it (most significant RDN
// first) matches; the same names in reverse order are another CA's.
func TestSameIssuer(t *testing.T) {
	dc := asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}
	cn := asn1.ObjectIdentifier{2, 5, 4, 3}
	c := &x509.Certificate{Issuer: pkix.Name{Names: []pkix.AttributeTypeAndValue{{Type: dc, Value: "com"}, {Type: dc, Value: "corp"}, {Type: cn, Value: "Corp CA"}}}}
	for dn, want := range map[string]bool{
		"DC=com,DC=corp,CN=Corp CA":     true,
		"dc=COM, DC=corp, CN=corp ca":   true,
		"CN=Corp CA,DC=corp,DC=com":     false,
		"DC=com,DC=corp":                false,
		"DC=com,DC=corp,CN=Corp CA,O=x": false,
		`DC=com,DC=corp,CN=Corp\, CA`:   false,
		"DC=com,DC=corp,CN=Corp CA\r\n": true,
	} {
		if got := sameIssuer(dn, c); got != want {
			t.Errorf("%q: %v", dn, got)
		}
	}
}

// TestSameUserImplicitUPN: the account's implicit UPN (no userPrincipalName
// of its own) is not taken as its name without asking: another account may
// hold it as its explicit UPN, which AD looks up first.
func TestSameUserImplicitUPN(t *testing.T) {
	dir := sidDirectory{"ALICE": "S-1-5-21-7-1101", "ALICE@CORP.EXAMPLE.TEST": "S-1-5-21-7-1102"}
	h := &ProxyHandler{Names: Names{Realm: "CORP.EXAMPLE.TEST", Accounts: &Accounts{Resolver: dir}}}
	id := &Identity{User: "alice", UPN: "alice@corp.example.test", ImplicitUPN: true, SID: "S-1-5-21-7-1101", Name: "alice"}
	ctx := context.Background()
	same := func(param string, id *Identity) bool {
		ok, err := h.sameUser(ctx, param, id)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if same("alice@corp.example.test", id) {
		t.Error("an implicit UPN that AD gives to another account was taken")
	}
	if !same("ALICE", id) {
		t.Error("the account's own name")
	}
	id.ImplicitUPN = false
	id.SID = "S-1-5-21-7-1102"
	id.User, id.Name = "bob", "bob"
	if !same("Alice@corp.example.test", id) {
		t.Error("an explicit UPN, ASCII case aside")
	}
}
