package kerberos

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jcmturner/gofork/encoding/asn1"
	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/iana/keyusage"
	"github.com/jcmturner/gokrb5/v8/iana/msgtype"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/iana/patype"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"
)

// The outside inputs handed to gokrb5's parsers: files (ccache, krb5.conf,
// keytab) and KDC replies (AS-REP, PREAUTH_REQUIRED e-data, the decrypted
// part of a TGS-REP). Each must give an error, never a panic.

const fuzzRealm = "CORP.EXAMPLE.TEST"

// The inputs that crashed the process before (issue 8): each must be an error now.
func TestCrashingInputs(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	if _, err := LoadCCache(empty); err == nil {
		t.Fatal("empty ccache accepted")
	}
	if _, err := ParseCCache([]byte{5, 4, 0, 0}); err == nil {
		t.Fatal("header-only ccache accepted")
	}
	if _, err := LoadKeytab(empty); err == nil {
		t.Fatal("empty keytab accepted")
	}
	conf := filepath.Join(dir, "krb5.conf")
	os.WriteFile(conf, []byte("[realms]\n CORP.EXAMPLE.TEST = { kdc = 127.0.0.1 }\n"), 0o600)
	if _, err := LoadConfig(conf); err == nil {
		t.Fatal("one-line realm accepted")
	}
	// A PREAUTH_REQUIRED answer when the configured enctypes hold none gokrb5 supports.
	cfg, err := ParseConfig("[libdefaults]\n default_realm = CORP.EXAMPLE.TEST\n default_tkt_enctypes = camellia256-cts-cmac\n")
	if err != nil {
		t.Fatal(err)
	}
	c := NewWithPassword("svc", fuzzRealm, "pw", cfg)
	c.send = replyOnce(preauthRequired(nil))
	if _, err := c.TGT(context.Background()); err == nil {
		t.Fatal("no error")
	}
}

func replyOnce(rep []byte) func(context.Context, string, []byte) ([]byte, string, error) {
	sent := false
	return func(context.Context, string, []byte) ([]byte, string, error) {
		if sent {
			return nil, "", errors.New("stub: one reply only")
		}
		sent = true
		return rep, "stub:88", nil
	}
}

func preauthRequired(edata []byte) []byte {
	k := messages.NewKRBError(types.NewPrincipalName(nametype.KRB_NT_SRV_INST, "krbtgt/"+fuzzRealm), fuzzRealm, CodePreauthRequired, "")
	k.EData = edata
	b, _ := k.Marshal()
	return b
}

func fuzzConfig(t testing.TB) *Client {
	cfg, err := NewConfig(fuzzRealm, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	kt := keytab.New()
	if err := kt.AddEntry("svc", fuzzRealm, "pw", time.Unix(0, 0), 1, etypeID.AES256_CTS_HMAC_SHA1_96); err != nil {
		t.Fatal(err)
	}
	return NewWithKeytab("svc", fuzzRealm, kt, cfg)
}

func FuzzCCache(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{5, 4, 0, 0})
	var ok []byte
	if b, err := os.ReadFile("testdata/alice.ccache"); err == nil {
		ok = b
		f.Add(b)
	}
	_ = ok
	f.Fuzz(func(t *testing.T, b []byte) {
		cc, err := ParseCCache(b)
		if err != nil {
			return
		}
		cfg, _ := NewConfig(fuzzRealm, "127.0.0.1")
		NewFromCCache(cc, cfg)
	})
}

func FuzzKrb5Conf(f *testing.F) {
	f.Add("[realms]\n CORP.EXAMPLE.TEST = { kdc = 127.0.0.1 }\n")
	f.Add("[libdefaults]\n default_realm = CORP.EXAMPLE.TEST\n[realms]\n CORP.EXAMPLE.TEST = {\n  kdc = 127.0.0.1:88\n }\n")
	f.Add("[domain_realm]\n .corp = CORP\n[realms]\nX={\n")
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := ParseConfig(s)
		if err != nil {
			return
		}
		tr := &Transport{Config: cfg}
		tr.kdcs(context.Background(), cfg.LibDefaults.DefaultRealm)
	})
}

func FuzzKeytab(f *testing.F) {
	kt := keytab.New()
	kt.AddEntry("svc", fuzzRealm, "pw", time.Unix(0, 0), 1, etypeID.AES256_CTS_HMAC_SHA1_96)
	b, _ := kt.Marshal()
	f.Add(b)
	f.Add([]byte{5, 2})
	f.Add([]byte{5, 2, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseKeytab(b)
	})
}

// FuzzPreauthEData: the e-data of a PREAUTH_REQUIRED answer (a spoofed UDP
// KRB-ERROR is enough to deliver it).
func FuzzPreauthEData(f *testing.F) {
	info, _ := asn1.Marshal(types.ETypeInfo2{{EType: etypeID.AES256_CTS_HMAC_SHA1_96, Salt: fuzzRealm + "svc"}})
	good, _ := asn1.Marshal(types.PADataSequence{{PADataType: patype.PA_ETYPE_INFO2, PADataValue: info}})
	f.Add(good)
	f.Add([]byte{0x30, 0x00})
	f.Add([]byte{0x30, 0x80})
	f.Fuzz(func(t *testing.T, edata []byte) {
		c := fuzzConfig(t)
		c.send = replyOnce(preauthRequired(edata))
		c.TGT(context.Background())
	})
}

// FuzzASRep: an AS exchange's reply. mode 0 hands the bytes over as the
// whole reply; otherwise they are the plaintext of the encrypted part,
// sealed under the service account's key, so the checks after decryption
// are reached.
func FuzzASRep(f *testing.F) {
	f.Add(byte(0), []byte{0x6b, 0x00})
	f.Add(byte(1), []byte{0x79, 0x03, 0x30, 0x01, 0x00})
	enc := messages.EncKDCRepPart{Key: types.EncryptionKey{KeyType: 18, KeyValue: make([]byte, 32)}, Nonce: 1,
		SRealm: fuzzRealm, SName: types.NewPrincipalName(nametype.KRB_NT_SRV_INST, "krbtgt/"+fuzzRealm), EndTime: time.Unix(2e9, 0)}
	if b, err := enc.Marshal(); err == nil {
		f.Add(byte(1), b)
	}
	f.Fuzz(func(t *testing.T, mode byte, b []byte) {
		c := fuzzConfig(t)
		rep := b
		if mode != 0 {
			key := c.creds.Keytab().Entries[0].Key
			ed, err := crypto.GetEncryptedData(b, key, keyusage.AS_REP_ENCPART, 1)
			if err != nil {
				return
			}
			r := messages.ASRep{KDCRepFields: messages.KDCRepFields{PVNO: 5, MsgType: msgtype.KRB_AS_REP, CRealm: fuzzRealm,
				CName: c.cname, Ticket: messages.Ticket{TktVNO: 5, Realm: fuzzRealm,
					SName: types.NewPrincipalName(nametype.KRB_NT_SRV_INST, "krbtgt/"+fuzzRealm), EncPart: ed}, EncPart: ed}}
			if rep, err = r.Marshal(); err != nil {
				return
			}
		}
		c.send = replyOnce(rep)
		if tk, err := c.TGT(context.Background()); err == nil && tk == nil {
			t.Fatal("nil TGT without error")
		}
	})
}

// FuzzKDCReplyPlain: the decrypted part of a TGS-REP, sealed under the TGT
// session key (usage 8), through every check after decryption.
func FuzzKDCReplyPlain(f *testing.F) {
	key := types.EncryptionKey{KeyType: etypeID.AES256_CTS_HMAC_SHA1_96, KeyValue: make([]byte, 32)}
	sname := types.PrincipalName{NameType: nametype.KRB_NT_SRV_INST, NameString: []string{"http", "mail"}}
	body := messages.KDCReqBody{Realm: fuzzRealm, Nonce: 42, SName: sname}
	good := messages.EncKDCRepPart{Key: key, Nonce: 42, SRealm: fuzzRealm, SName: sname, EndTime: time.Unix(2e9, 0)}
	if b, err := good.Marshal(); err == nil {
		f.Add(b)
	}
	f.Add([]byte{0x7a, 0x00})
	f.Fuzz(func(t *testing.T, plain []byte) {
		ed, err := crypto.GetEncryptedData(plain, key, keyusage.TGS_REP_ENCPART_SESSION_KEY, 0)
		if err != nil {
			return
		}
		r := messages.TGSRep{KDCRepFields: messages.KDCRepFields{PVNO: 5, MsgType: msgtype.KRB_TGS_REP, CRealm: fuzzRealm,
			CName:  types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, "alice"),
			Ticket: messages.Ticket{TktVNO: 5, Realm: fuzzRealm, SName: sname, EncPart: ed}, EncPart: ed}}
		raw, err := r.Marshal()
		if err != nil {
			return
		}
		var rep messages.TGSRep
		tk, err := verifyTGSRep(raw, &rep, key, body, time.Unix(0, 0), "S4U2Proxy", "http/mail")
		if err == nil {
			if tk == nil {
				t.Fatal("nil ticket without error")
			}
			checkS4UEcho(rep.PAData, body.Nonce, key)
			tk.IsFor("alice")
			_ = tk.String()
		}
	})
}
