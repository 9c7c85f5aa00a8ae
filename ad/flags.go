package ad

import (
	"fmt"
	"strconv"
	"strings"
)

// UAC is the userAccountControl bit field of an account.
type UAC uint32

// userAccountControl bits ([MS-ADTS] 2.2.16).
const (
	UACScript                     UAC = 0x1
	UACAccountDisable             UAC = 0x2
	UACHomedirRequired            UAC = 0x8
	UACLockout                    UAC = 0x10
	UACPasswdNotReqd              UAC = 0x20
	UACPasswdCantChange           UAC = 0x40
	UACEncryptedTextPwdAllowed    UAC = 0x80
	UACNormalAccount              UAC = 0x200
	UACInterdomainTrustAccount    UAC = 0x800
	UACWorkstationTrustAccount    UAC = 0x1000
	UACServerTrustAccount         UAC = 0x2000
	UACDontExpirePassword         UAC = 0x10000
	UACSmartcardRequired          UAC = 0x40000
	UACTrustedForDelegation       UAC = 0x80000 // unconstrained delegation: segkcd never sets it
	UACNotDelegated               UAC = 0x100000
	UACUseDESKeyOnly              UAC = 0x200000
	UACDontRequirePreauth         UAC = 0x400000
	UACPasswordExpired            UAC = 0x800000
	UACTrustedToAuthForDelegation UAC = 0x1000000 // protocol transition (S4U2Self evidence is forwardable)
	UACPartialSecretsAccount      UAC = 0x4000000
)

var uacNames = []struct {
	bit  UAC
	name string
}{
	{UACScript, "SCRIPT"},
	{UACAccountDisable, "ACCOUNTDISABLE"},
	{UACHomedirRequired, "HOMEDIR_REQUIRED"},
	{UACLockout, "LOCKOUT"},
	{UACPasswdNotReqd, "PASSWD_NOTREQD"},
	{UACPasswdCantChange, "PASSWD_CANT_CHANGE"},
	{UACEncryptedTextPwdAllowed, "ENCRYPTED_TEXT_PWD_ALLOWED"},
	{UACNormalAccount, "NORMAL_ACCOUNT"},
	{UACInterdomainTrustAccount, "INTERDOMAIN_TRUST_ACCOUNT"},
	{UACWorkstationTrustAccount, "WORKSTATION_TRUST_ACCOUNT"},
	{UACServerTrustAccount, "SERVER_TRUST_ACCOUNT"},
	{UACDontExpirePassword, "DONT_EXPIRE_PASSWORD"},
	{UACSmartcardRequired, "SMARTCARD_REQUIRED"},
	{UACTrustedForDelegation, "TRUSTED_FOR_DELEGATION"},
	{UACNotDelegated, "NOT_DELEGATED"},
	{UACUseDESKeyOnly, "USE_DES_KEY_ONLY"},
	{UACDontRequirePreauth, "DONT_REQ_PREAUTH"},
	{UACPasswordExpired, "PASSWORD_EXPIRED"},
	{UACTrustedToAuthForDelegation, "TRUSTED_TO_AUTH_FOR_DELEGATION"},
	{UACPartialSecretsAccount, "PARTIAL_SECRETS_ACCOUNT"},
}

// Has reports whether every bit of f is set.
func (u UAC) Has(f UAC) bool { return u&f == f }

// String lists the flag names, e.g. "0x1000200 NORMAL_ACCOUNT|TRUSTED_TO_AUTH_FOR_DELEGATION".
func (u UAC) String() string {
	var names []string
	rest := u
	for _, n := range uacNames {
		if u&n.bit != 0 {
			names = append(names, n.name)
			rest &^= n.bit
		}
	}
	if rest != 0 {
		names = append(names, "0x"+strconv.FormatUint(uint64(rest), 16))
	}
	return "0x" + strconv.FormatUint(uint64(u), 16) + " " + strings.Join(names, "|")
}

// EncType is the msDS-SupportedEncryptionTypes bit field: which Kerberos
// encryption types the KDC may use for tickets to the account.
type EncType uint32

// msDS-SupportedEncryptionTypes bits ([MS-KILE] 2.2.7).
const (
	EncDESCBCCRC     EncType = 0x1
	EncDESCBCMD5     EncType = 0x2
	EncRC4HMAC       EncType = 0x4
	EncAES128        EncType = 0x8
	EncAES256        EncType = 0x10
	EncAES256SK      EncType = 0x20 // AES256 session keys for RC4/DES-keyed accounts (2022+)
	EncFASTSupported EncType = 0x10000
	EncCompoundID    EncType = 0x20000
	EncClaims        EncType = 0x40000
	EncRBCDDisabled  EncType = 0x80000

	// EncAES is AES128|AES256 (24): tickets are AES, never RC4. The default for new accounts.
	EncAES = EncAES128 | EncAES256
)

var encNames = []struct {
	bit  EncType
	name string
}{
	{EncDESCBCCRC, "DES-CBC-CRC"},
	{EncDESCBCMD5, "DES-CBC-MD5"},
	{EncRC4HMAC, "RC4-HMAC"},
	{EncAES128, "AES128-CTS-HMAC-SHA1-96"},
	{EncAES256, "AES256-CTS-HMAC-SHA1-96"},
	{EncAES256SK, "AES256-SK"},
	{EncFASTSupported, "FAST-supported"},
	{EncCompoundID, "Compound-identity-supported"},
	{EncClaims, "Claims-supported"},
	{EncRBCDDisabled, "Resource-SID-compression-disabled"},
}

// String lists the encryption types, e.g. "24 AES128-CTS-HMAC-SHA1-96|AES256-CTS-HMAC-SHA1-96".
func (e EncType) String() string {
	var names []string
	for _, n := range encNames {
		if e&n.bit != 0 {
			names = append(names, n.name)
		}
	}
	if len(names) == 0 {
		return strconv.FormatUint(uint64(e), 10) + " (unset: DC default, RC4 on many)"
	}
	return strconv.FormatUint(uint64(e), 10) + " " + strings.Join(names, "|")
}

// RC4Exposure says why an account's msDS-SupportedEncryptionTypes leaves
// it exposed to Windows' RC4 cut-off (CVE-2026-20833, KB5073381): from the
// April 2026 updates DCs issue AES-only tickets to accounts that do not
// set the attribute, and from July 2026 there is no way back. It returns
// nil for an account that allows AES and nothing weaker. What the
// attributes cannot show is whether the account has AES keys at all (a
// password set before the domain had AES): the etype of a real ticket to
// it does (kerberos.Client.KeyTypes).
func (a *Account) RC4Exposure() []string {
	e := a.SupportedEncryptionTypes
	var why []string
	switch {
	case e&(EncAES|EncRC4HMAC|EncDESCBCCRC|EncDESCBCMD5) == 0:
		why = append(why, "msDS-SupportedEncryptionTypes allows no encryption type (unset): DCs with the 2026 updates issue it AES tickets only, "+
			"which fail if its keys predate AES; set it to AES (24) and reset the password")
	case e&EncRC4HMAC != 0 || e&(EncDESCBCCRC|EncDESCBCMD5) != 0:
		why = append(why, fmt.Sprintf("msDS-SupportedEncryptionTypes allows %v: DCs with the July 2026 updates refuse RC4 and DES; set it to AES (24)", e))
	}
	if e&EncAES == 0 && e != 0 {
		why = append(why, "msDS-SupportedEncryptionTypes allows no AES: set it to AES (24) and reset the password so that AES keys exist")
	}
	return why
}
