package kerberos

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/segkcd/segkcd/internal/redact"
)

// KeytabSpec describes the account whose keys a keytab holds.
type KeytabSpec struct {
	// Realm is the Kerberos realm, e.g. CORP.EXAMPLE.COM.
	Realm string
	// SAMAccountName of the account, with the $ for a computer ("EXCHASA$").
	SAMAccountName string
	// DNSDomain is used in computer salts; empty means lower(Realm).
	DNSDomain string
	// Principals to list: empty means SAMAccountName alone. Add the SPNs the
	// account holds ("http/mail.corp.example.com") so that a service can find
	// the key by the ticket's server name.
	Principals []string
	Password   string
	// KVNO is the key version (msDS-KeyVersionNumber; default 1). Keytab
	// entries keep all 32 bits (the 8-bit field holds the low byte, as MIT
	// writes it), so an account whose key version passed 255 still matches.
	KVNO uint32
	// ETypes default to AES256, AES128 and RC4 (RC4 for accounts without
	// msDS-SupportedEncryptionTypes, which Samba and older DCs serve in RC4).
	ETypes []int32
}

// Format prints the spec without its password, for every verb.
func (s KeytabSpec) Format(f fmt.State, verb rune) {
	type plain KeytabSpec
	m := plain(s)
	m.Password = redact.String(m.Password)
	redact.Format(f, verb, "kerberos.KeytabSpec", m)
}

// ADSalt is the salt AD uses for an account's AES keys: REALM followed by
// the sAMAccountName for a user ("CORP.EXAMPLE.COMsvc_awseg"), and REALM,
// "host", the lower-case name without $, ".", the lower-case DNS domain for
// a computer ("CORP.EXAMPLE.COMhostexchasa.corp.example.com").
func ADSalt(realm, samAccountName, dnsDomain string) string {
	if name, isComputer := strings.CutSuffix(samAccountName, "$"); isComputer {
		if dnsDomain == "" {
			dnsDomain = realm
		}
		return realm + "host" + strings.ToLower(name) + "." + strings.ToLower(dnsDomain)
	}
	return realm + samAccountName
}

// KeytabFromPassword derives an account's keys from its password with AD's
// salt rules and returns them as a keytab (MIT format when marshalled,
// which klist -k reads). The password is not kept.
func KeytabFromPassword(spec KeytabSpec) (*keytab.Keytab, error) {
	const op = "keytab from password"
	if spec.Realm == "" || spec.SAMAccountName == "" || spec.Password == "" {
		return nil, fail(op, spec.SAMAccountName, errors.New("realm, sAMAccountName and password are required"))
	}
	kvno := spec.KVNO
	if kvno == 0 {
		kvno = 1
	}
	etypes := spec.ETypes
	if len(etypes) == 0 {
		etypes = []int32{etypeID.AES256_CTS_HMAC_SHA1_96, etypeID.AES128_CTS_HMAC_SHA1_96, etypeID.RC4_HMAC}
	}
	principals := spec.Principals
	if len(principals) == 0 {
		principals = []string{spec.SAMAccountName}
	}
	salt := ADSalt(spec.Realm, spec.SAMAccountName, spec.DNSDomain)
	kt := keytab.New()
	now := time.Now().UTC().Truncate(time.Second)
	for _, et := range etypes {
		e, err := crypto.GetEtype(et)
		if err != nil {
			return nil, fail(op, spec.SAMAccountName, fmt.Errorf("encryption type %d: %w", et, err))
		}
		key, err := e.StringToKey(spec.Password, salt, e.GetDefaultStringToKeyParams())
		if err != nil {
			return nil, fail(op, spec.SAMAccountName, fmt.Errorf("encryption type %d: derivation failed", et))
		}
		for _, p := range principals {
			// AddEntry derives with the default salt; the AD-salted key replaces it.
			if err := kt.AddEntry(p, spec.Realm, spec.Password, now, uint8(kvno), et); err != nil {
				return nil, fail(op, p, errors.New("cannot add keytab entry"))
			}
			kt.Entries[len(kt.Entries)-1].Key.KeyValue = key
			kt.Entries[len(kt.Entries)-1].KVNO = kvno
		}
	}
	return kt, nil
}
