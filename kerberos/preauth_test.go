package kerberos_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jcmturner/gofork/encoding/asn1"
	"github.com/jcmturner/gokrb5/v8/iana/errorcode"
	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/iana/patype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/segkcd/segkcd/kerberos"
)

// preauthKDC answers every AS-REQ without a timestamp with PREAUTH_REQUIRED
// offering offer in ETYPE-INFO2, and reports the etype of each
// PA-ENC-TIMESTAMP it gets.
func preauthKDC(t *testing.T, offer types.ETypeInfo2) (addr string, timestamps <-chan int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan int32, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				var l [4]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				b := make([]byte, binary.BigEndian.Uint32(l[:]))
				if _, err := io.ReadFull(c, b); err != nil {
					return
				}
				var req messages.ASReq
				if req.Unmarshal(b) != nil {
					return
				}
				for _, pa := range req.PAData {
					if pa.PADataType == patype.PA_ENC_TIMESTAMP {
						var ed types.EncryptedData
						asn1.Unmarshal(pa.PADataValue, &ed)
						got <- ed.EType
						return
					}
				}
				ib, _ := asn1.Marshal(offer)
				ed, _ := asn1.Marshal(types.PADataSequence{{PADataType: patype.PA_ETYPE_INFO2, PADataValue: ib}})
				ke := messages.NewKRBError(req.ReqBody.SName, req.ReqBody.Realm, errorcode.KDC_ERR_PREAUTH_REQUIRED, "")
				ke.EData = ed
				kb, _ := ke.Marshal()
				var o [4]byte
				binary.BigEndian.PutUint32(o[:], uint32(len(kb)))
				c.Write(append(o[:], kb...))
			}(c)
		}
	}()
	return ln.Addr().String(), got
}

// Whoever answers for the KDC (PREAUTH_REQUIRED is not authenticated) and
// offers RC4 alone must not get a PA-ENC-TIMESTAMP under the account's RC4
// key (its NT hash, to crack offline): without AllowRC4 the client sends
// none and says why. Offered RC4 first and AES after, it uses AES, with
// AES's salt. (Found by review.)
func TestPreauthNeverRC4(t *testing.T) {
	login := func(addr string) error {
		cfg, _ := kerberos.NewConfig("EXAMPLE.TEST", addr)
		cfg.LibDefaults.UDPPreferenceLimit = 1
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := kerberos.NewWithPassword("svc", "EXAMPLE.TEST", "Passw0rd!", cfg).TGT(ctx)
		return err
	}
	addr, got := preauthKDC(t, types.ETypeInfo2{{EType: etypeID.RC4_HMAC}})
	if err := login(addr); !errors.Is(err, kerberos.ErrWeakEncryption) {
		t.Errorf("RC4 offered alone: %v, want ErrWeakEncryption", err)
	}
	select {
	case e := <-got:
		t.Errorf("a PA-ENC-TIMESTAMP in etype %d went to a KDC that offered RC4 alone", e)
	default:
	}
	addr, got = preauthKDC(t, types.ETypeInfo2{{EType: etypeID.RC4_HMAC}, {EType: etypeID.AES256_CTS_HMAC_SHA1_96, Salt: "EXAMPLE.TESTsvc"}})
	login(addr) // the fake KDC never answers the timestamp
	select {
	case e := <-got:
		if e != etypeID.AES256_CTS_HMAC_SHA1_96 {
			t.Errorf("RC4 offered first, then AES256: the timestamp is in etype %d", e)
		}
	case <-time.After(5 * time.Second):
		t.Error("RC4 offered first, then AES256: no PA-ENC-TIMESTAMP")
	}
}
