package kerberos_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/segkcd/segkcd/kerberos"
)

// A gateway's service account gets alice a ticket to Exchange.
func Example() {
	cfg, err := kerberos.NewConfig("CORP.EXAMPLE.COM", "dc1.corp.example.com", "dc2.corp.example.com")
	if err != nil {
		log.Fatal(err)
	}
	svc := kerberos.NewWithPassword("svc_awseg", "CORP.EXAMPLE.COM", os.Getenv("SVC_PASSWORD"), cfg)
	tkt, err := svc.Impersonate(context.Background(), "alice@corp.example.com", "http/mail.corp.example.com")
	switch {
	case errors.Is(err, kerberos.ErrNotDelegable):
		log.Fatal("add the SPN to msDS-AllowedToDelegateTo of svc_awseg")
	case errors.Is(err, kerberos.ErrEvidenceNotForwardable):
		log.Fatal("svc_awseg needs TRUSTED_TO_AUTH_FOR_DELEGATION, or the user is sensitive")
	case err != nil:
		log.Fatal(err)
	}
	fmt.Println(tkt) // http/mail.corp.example.com@CORP.EXAMPLE.COM for alice@..., until ...
}

func ExampleNewPAForUser() {
	key := types.EncryptionKey{KeyType: etypeID.AES256_CTS_HMAC_SHA1_96, KeyValue: make([]byte, 32)}
	for i := range key.KeyValue {
		key.KeyValue[i] = byte(i)
	}
	user, _ := kerberos.ParseUser("alice", "CORP.EXAMPLE.TEST")
	pa, err := kerberos.NewPAForUser(user, "CORP.EXAMPLE.TEST", key)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(pa.Cksum.CksumType, hex.EncodeToString(pa.Cksum.Checksum))
	// Output: -138 5991e5c15699f8b508d35e2cb9fdc4ef
}
