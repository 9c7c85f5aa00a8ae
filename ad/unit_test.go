package ad

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode"

	"github.com/go-ldap/ldap/v3"
)

func TestParseDiagnostic(t *testing.T) {
	for _, tc := range []struct {
		msg           string
		ok            bool
		code, data    uint32
		hasData       bool
		textHasPrefix string
	}{
		// Samba 4.17, as seen in the lab.
		{msg: "0000052D: Constraint violation - check_password_restrictions: the password is too short. It should be equal or longer than 7 characters!",
			ok: true, code: 0x52D, textHasPrefix: "Constraint violation"},
		// Windows, password policy on unicodePwd.
		{msg: "0000052D: AtrErr: DSID-03191083, #1:\n\t0: 0000052D: DSID-03191083, problem 1005 (CONSTRAINT_ATT_TYPE), data 0, Att 9005a (unicodePwd)\n\x00",
			ok: true, code: 0x52D, data: 0, hasData: true},
		// Windows bind failure: the real reason is in "data 52e".
		{msg: "80090308: LdapErr: DSID-0C09041C, comment: AcceptSecurityContext error, data 52e, v4563\x00",
			ok: true, code: 0x80090308, data: 0x52e, hasData: true},
		{msg: "00002077: SvcErr: DSID-031A1265, problem 5003 (WILL_NOT_PERFORM), data 0\n", ok: true, code: 0x2077, hasData: true},
		{msg: "000021C7: AtrErr: DSID-03200E96, #1:\n\t0: 000021C7: DSID-03200E96, problem 1005 (CONSTRAINT_ATT_TYPE), data 0, Att 90303 (servicePrincipalName)",
			ok: true, code: 0x21C7, hasData: true},
		{msg: "  0000216D: SvcErr: DSID-031A124C, problem 5003 (WILL_NOT_PERFORM), data 0", ok: true, code: 0x216D, hasData: true},
		// "metadata" is not "data".
		{msg: "00002098: metadata 12, no data here", ok: true, code: 0x2098},
		{msg: "", ok: false},
		{msg: "Constraint violation", ok: false},
		{msg: "0000052: short", ok: false},
		{msg: "+000052D: signed", ok: false},
		{msg: "0x00052D: prefixed", ok: false},
		{msg: "0000052DX trailing", ok: false},
	} {
		d, ok := ParseDiagnostic(tc.msg)
		if ok != tc.ok || d.Code != tc.code || d.Data != tc.data || d.HasData != tc.hasData ||
			!strings.HasPrefix(d.Text, tc.textHasPrefix) {
			t.Errorf("ParseDiagnostic(%q) = %+v, %v", tc.msg, d, ok)
		}
	}
}

// FuzzParseDiagnostic: the parser never panics, and what it returns is
// consistent with its input. Seed corpus in testdata/fuzz/FuzzParseDiagnostic.
func FuzzParseDiagnostic(f *testing.F) {
	f.Add("0000052D: Constraint violation - check_password_restrictions: too short")
	f.Add("80090308: LdapErr: DSID-0C09041C, comment: AcceptSecurityContext error, data 52e, v4563")
	f.Fuzz(func(t *testing.T, msg string) {
		d, ok := ParseDiagnostic(msg)
		if !ok {
			if d != (Diagnostic{}) {
				t.Fatalf("not ok but returned %+v", d)
			}
			return
		}
		trimmed := strings.TrimLeft(msg, " \t\r\n")
		if got := fmt.Sprintf("%08X", d.Code); !strings.EqualFold(got, trimmed[:8]) {
			t.Fatalf("code %s from %q", got, trimmed[:8])
		}
		if !strings.Contains(msg, d.Text) {
			t.Fatalf("text %q not in message", d.Text)
		}
		if d.HasData && !strings.Contains(strings.ToLower(d.Text), "data "+strings.ToLower(fmt.Sprintf("%x", d.Data))) &&
			!strings.Contains(strings.ToLower(d.Text), "data 0") {
			t.Fatalf("data %x not in %q", d.Data, d.Text)
		}
		// Wrapping never panics and keeps the code.
		err := wrap("op", "obj", ldap.NewError(ldap.LDAPResultUnwillingToPerform, errors.New(msg)))
		var e *Error
		if !errors.As(err, &e) || e.Code != d.Code {
			t.Fatalf("wrap lost the code: %v", err)
		}
		_ = err.Error()
	})
}

func TestWrapClassifies(t *testing.T) {
	for _, tc := range []struct {
		code uint16
		msg  string
		kind error
		ad   uint32
	}{
		{19, "0000052D: Constraint violation - check_password_restrictions", ErrPasswordPolicy, 0x52D},
		{53, "0000052D: password history", ErrPasswordPolicy, 0x52D},
		{53, "00002077: SvcErr: DSID-031A1265, problem 5003 (WILL_NOT_PERFORM), data 0", ErrUnwilling, 0x2077},
		{53, "0000001F: SvcErr: DSID-031A12D2, problem 5003 (WILL_NOT_PERFORM), data 0", ErrUnwilling, 0x1F},
		{19, "000021C7: AtrErr: DSID-03200E96, problem 1005", ErrDuplicateSPN, 0x21C7},
		{50, "00002098: SecErr: DSID-03150F94, problem 4003 (INSUFF_ACCESS_RIGHTS), data 0", ErrInsufficientRights, 0x2098},
		{68, "00000524: UpdErr: DSID-031A11E2, problem 6005 (ENTRY_EXISTS), data 0", ErrExists, 0x524},
		{68, "Entry already exists", ErrExists, 0},
		{53, "0000216D: SvcErr: DSID-031A124C, problem 5003 (WILL_NOT_PERFORM), data 0", ErrMachineAccountQuota, 0x216D},
		{32, "0000208D: NameErr: DSID-03100241, problem 2001 (NO_OBJECT)", ErrNotFound, 0x208D},
		{49, "80090308: LdapErr: DSID-0C09041C, comment: AcceptSecurityContext error, data 52e, v4563", ErrInvalidCredentials, 0x80090308},
		{8, "00002028: LdapErr: DSID-0C090259, comment: The server requires binds to turn on integrity checking", ErrTLSRequired, 0x2028},
		{34, "00002032: invalid basedn", ErrInvalidArgument, 0x2032},
	} {
		err := wrap("op", "CN=x", ldap.NewError(tc.code, errors.New(tc.msg)))
		if !errors.Is(err, tc.kind) {
			t.Errorf("%d %q: want %v, got %v", tc.code, tc.msg, tc.kind, err)
		}
		var e *Error
		var le *ldap.Error
		if !errors.As(err, &e) || e.LDAPCode != tc.code || e.Code != tc.ad || !errors.As(err, &le) {
			t.Errorf("%d %q: codes lost: %#v", tc.code, tc.msg, e)
		}
		if !strings.Contains(err.Error(), hints[tc.kind]) {
			t.Errorf("no hint in %q", err)
		}
	}
	// go-ldap's client-side network errors are not DC results.
	err := wrap("op", "", ldap.NewError(ldap.ErrorNetwork, errors.New("ldap: connection closed")))
	var e *Error
	if !errors.As(err, &e) || e.LDAPCode != 0 || e.Kind != nil {
		t.Fatalf("network error: %#v", e)
	}
	if !errors.Is(wrap("op", "", context.Canceled), context.Canceled) {
		t.Fatal("context.Canceled lost")
	}
}

func TestDuplicateSPNError(t *testing.T) {
	dup := &DuplicateSPNError{SPN: "http/mail.corp", Match: "HOST/mail.corp", Holders: []string{"CN=MAIL,CN=Computers"}}
	err := &Error{Op: "add SPN", Object: "CN=svc", Kind: ErrDuplicateSPN, Err: dup}
	var got *DuplicateSPNError
	if !errors.Is(err, ErrDuplicateSPN) || !errors.As(err, &got) || got != dup {
		t.Fatal("DuplicateSPNError not reachable")
	}
	if s := err.Error(); !strings.Contains(s, "CN=MAIL") || !strings.Contains(s, "HOST/mail.corp") {
		t.Fatal(s)
	}
}

func TestEncodePassword(t *testing.T) {
	got, err := encodePassword("Pä1")
	if err != nil {
		t.Fatal(err)
	}
	// " P ä 1 " in UTF-16LE, no BOM.
	if want := "220050 00e4 003100 2200"; hex.EncodeToString([]byte(got)) != strings.ReplaceAll(want, " ", "") {
		t.Fatalf("got %x", got)
	}
	// Outside the BMP: a surrogate pair.
	got, _ = encodePassword("😀")
	if hex.EncodeToString([]byte(got)) != "22003dd800de2200" {
		t.Fatalf("surrogates: %x", got)
	}
	for _, bad := range []string{"a\x00b", "\xff"} {
		if _, err := encodePassword(bad); err == nil || strings.Contains(err.Error(), bad) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
}

func TestGeneratePassword(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		pw, err := GeneratePassword(0, "svc_awseg", "EXCHASA$", "ab")
		if err != nil {
			t.Fatal(err)
		}
		if len(pw) != 64 || seen[pw] {
			t.Fatalf("length %d or repeated", len(pw))
		}
		seen[pw] = true
		var up, low, dig, sym bool
		for _, r := range pw {
			switch {
			case unicode.IsUpper(r):
				up = true
			case unicode.IsLower(r):
				low = true
			case unicode.IsDigit(r):
				dig = true
			case strings.ContainsRune(pwSymbol, r):
				sym = true
			default:
				t.Fatalf("unexpected character %q", r)
			}
		}
		if !up || !low || !dig || !sym {
			t.Fatalf("missing a class: %v %v %v %v", up, low, dig, sym)
		}
		if strings.Contains(strings.ToLower(pw), "exchasa") || strings.Contains(strings.ToLower(pw), "svc_awseg") {
			t.Fatal("contains an avoided name")
		}
	}
	for _, n := range []int{8, 256} {
		if pw, err := GeneratePassword(n); err != nil || len(pw) != n {
			t.Fatalf("length %d: %v", n, err)
		}
	}
	for _, n := range []int{-1, 7, 257} {
		if _, err := GeneratePassword(n); err == nil {
			t.Fatalf("length %d accepted", n)
		}
	}
}

func TestFlags(t *testing.T) {
	u := UACNormalAccount | UACDontExpirePassword
	next := (u | UACTrustedToAuthForDelegation) &^ UACDontExpirePassword
	if next != 0x1000200 || !next.Has(UACTrustedToAuthForDelegation) || next.Has(UACDontExpirePassword) {
		t.Fatalf("%v", next)
	}
	if s := next.String(); s != "0x1000200 NORMAL_ACCOUNT|TRUSTED_TO_AUTH_FOR_DELEGATION" {
		t.Fatal(s)
	}
	if s := UAC(0x80000000 | 0x2).String(); s != "0x80000002 ACCOUNTDISABLE|0x80000000" {
		t.Fatal(s)
	}
	if EncAES != 24 || (EncAES|EncRC4HMAC) != 28 {
		t.Fatal("EncAES")
	}
	if s := EncAES.String(); s != "24 AES128-CTS-HMAC-SHA1-96|AES256-CTS-HMAC-SHA1-96" {
		t.Fatal(s)
	}
}

func TestParseSPN(t *testing.T) {
	for spn, ok := range map[string]bool{
		"http/mail.corp.example.test":         true,
		"HTTP/svc_awseg":                      true,
		"ldap/dc1.corp.example.test/corp":     true,
		"MSSQLSvc/db.corp:1433":               true,
		"http":                                false,
		"/host":                               false,
		"http/":                               false,
		"http//x":                             false,
		"http/mail corp":                      false,
		"http/x/":                             false,
		"http/mail.corp.example.test\nmember": false,
	} {
		if _, _, err := ParseSPN(spn); (err == nil) != ok {
			t.Errorf("ParseSPN(%q): %v", spn, err)
		}
	}
}

func TestParseSPNMappings(t *testing.T) {
	m := parseSPNMappings([]string{"host=alerter,appmgmt, HTTP ,cisvc,,", "junk", "other=x"})
	if m["http"] != "host" || m["alerter"] != "host" || m["x"] != "other" || len(m) != 5 {
		t.Fatal(m)
	}
}

func TestDecodeSID(t *testing.T) {
	b, _ := hex.DecodeString("010500000000000515000000a1b2c3d4e5f60718293a4b5c54040000")
	s, err := DecodeSID(b)
	if err != nil || s != "S-1-5-21-3569595041-403175141-1548433961-1108" {
		t.Fatalf("%q %v", s, err)
	}
	for _, bad := range []string{"", "01", "0205000000000005", "010100000000000515"} {
		b, _ := hex.DecodeString(bad)
		if _, err := DecodeSID(b); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestIsDN(t *testing.T) {
	for name, want := range map[string]bool{
		"CN=alice,CN=Users,DC=corp,DC=example,DC=test": true,
		"cn=a\\,b,dc=x":           true,
		"2.5.4.3=alice,DC=x":      true,
		"alice":                   false,
		"alice)(sAMAccountName=*": false,
		"a=b)":                    true, // a valid DN; it is a base, never a filter
		"=x":                      false,
		"1abc=x":                  false,
	} {
		if got := isDN(name); got != want {
			t.Errorf("isDN(%q) = %v", name, got)
		}
	}
}

func TestCheckName(t *testing.T) {
	for name, ok := range map[string]bool{
		"EXCHASA": true, "svc_awseg": true, "": false, "a/b": false, "x@y": false,
		"trailing.": false, "exactly15chars_": true, "sixteen_chars_xx": false,
	} {
		if err := checkName("op", name, 15); (err == nil) != ok {
			t.Errorf("checkName(%q): %v", name, err)
		}
	}
}

func TestErrorNeverHoldsPassword(t *testing.T) {
	const secret = "S3cret-Value!"
	_, err := GeneratePassword(3)
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Fatal(err)
	}
	c := &Conn{} // no TLS
	_, err = c.ResetPassword(context.Background(), "alice", secret)
	if !errors.Is(err, ErrTLSRequired) || strings.Contains(err.Error(), secret) {
		t.Fatal(err)
	}
	_, err = c.ChangePassword(context.Background(), "alice", secret, secret+"2")
	if !errors.Is(err, ErrTLSRequired) || strings.Contains(err.Error(), secret) {
		t.Fatal(err)
	}
}

// Error texts: the wrapping step stays ("StartTLS"), the DC's text appears
// once, an SSPI status is labelled as such.
func TestErrorText(t *testing.T) {
	diag := "00002077: Operation unavailable without authentication"
	err := wrap("dial", "ldap://dc1", fmt.Errorf("StartTLS: %w", ldap.NewError(ldap.LDAPResultUnwillingToPerform, errors.New(diag))))
	s := err.Error()
	if !strings.Contains(s, "StartTLS") || strings.Count(s, "Operation unavailable") != 1 {
		t.Fatalf("%s", s)
	}
	err = wrap("bind", "CORP\\admin", ldap.NewError(ldap.LDAPResultInvalidCredentials,
		errors.New("80090308: LdapErr: DSID-0C09041C, comment: AcceptSecurityContext error, data 52e, v4563")))
	if s := err.Error(); !strings.Contains(s, "SSPI 80090308") || strings.Contains(s, "AD 80090308") {
		t.Fatalf("%s", s)
	}
	err = wrap("find account", "alice", ldap.NewError(ldap.LDAPResultOther, errors.New("something odd")))
	if s := err.Error(); strings.Count(s, "something odd") != 1 {
		t.Fatalf("%s", s)
	}
}

// Secret-holding values format without the secret, whatever the verb.
func TestFormatHidesPasswords(t *testing.T) {
	const secret = "Sekr1t-Passw0rd!"
	for _, v := range []any{
		SimpleBind{Username: "admin", Password: secret},
		&SimpleBind{Username: "admin", Password: secret},
		Config{URL: "ldaps://dc1", Bind: SimpleBind{Username: "admin", Password: secret}},
		ServiceAccountRequest{Name: "svc", Password: secret},
		ComputerAccountRequest{Name: "EXCHASA", Password: secret},
	} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			if out := fmt.Sprintf(verb, v); strings.Contains(out, secret) || strings.Contains(out, "Sekr1t") {
				t.Errorf("%s of %T: %s", verb, v, out)
			}
		}
	}
	if out := fmt.Sprintf("%#v", SimpleBind{Username: "admin", Password: secret}); !strings.HasPrefix(out, "ad.SimpleBind{") {
		t.Errorf("%%#v: %s", out)
	}
}
