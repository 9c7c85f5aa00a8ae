package ad

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/go-ldap/ldap/v3"
)

// Sentinel errors. Every error an operation returns is an *Error; use
// errors.Is with these to branch on what went wrong, and errors.As with
// *Error (or *ldap.Error) for the codes.
var (
	// ErrNotFound: no object has that name or DN (LDAP 32 noSuchObject, or an empty search).
	ErrNotFound = errors.New("not found")
	// ErrAmbiguous: a name matched more than one object.
	ErrAmbiguous = errors.New("name matches more than one object")
	// ErrExists: the object or its sAMAccountName already exists (LDAP 68, AD 00000524),
	// or the name is held by an object of another kind.
	ErrExists = errors.New("already exists")
	// ErrPasswordPolicy: the password does not meet the domain policy (AD 0000052D).
	ErrPasswordPolicy = errors.New("password does not meet the domain's password policy")
	// ErrUnwilling: the DC will not perform the operation (LDAP 53, AD 00002077 or 0000001F).
	ErrUnwilling = errors.New("the domain controller will not perform this operation")
	// ErrDuplicateSPN: the SPN, or its HOST/ alias, is registered on another account
	// (AD 000021C7, or our own forest-wide check). See *DuplicateSPNError.
	ErrDuplicateSPN = errors.New("duplicate SPN")
	// ErrInsufficientRights: the bound account lacks a right (LDAP 50, AD 00002098).
	ErrInsufficientRights = errors.New("insufficient access rights")
	// ErrMachineAccountQuota: the bound account reached ms-DS-MachineAccountQuota (AD 0000216D).
	ErrMachineAccountQuota = errors.New("machine account quota exceeded")
	// ErrInvalidCredentials: the bind was refused (LDAP 49).
	ErrInvalidCredentials = errors.New("invalid credentials")
	// ErrTLSRequired: the operation needs TLS and the connection has none
	// (refused by us before sending, or LDAP 8 strongerAuthRequired from the DC).
	ErrTLSRequired = errors.New("TLS required")
	// ErrSigningRequired: the DC wants SASL signing or sealing even inside TLS
	// (Samba's default), which go-ldap cannot do.
	ErrSigningRequired = errors.New("the DC requires SASL signing or sealing")
	// ErrUnconstrainedDelegation: segkcd refuses to set TRUSTED_FOR_DELEGATION.
	ErrUnconstrainedDelegation = errors.New("unconstrained delegation refused")
	// ErrInvalidArgument: a name, SPN or option is malformed; nothing was sent.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrSystemOnly: the DC lets no LDAP client write the attribute, only
	// itself (Samba's msDS-AllowedToActOnBehalfOfOtherIdentity).
	ErrSystemOnly = errors.New("the DC lets only itself write this attribute")
	// ErrConflict: a compare-and-swap found another value than the one it
	// expected: another writer got there first (LDAP 16 noSuchAttribute or
	// 20 attributeOrValueExists on a delete-and-add).
	ErrConflict = errors.New("the value changed since it was read")
	// ErrNoDC: no domain controller could be reached and bound (DialError
	// says which were tried and why each failed), or DNS named none.
	ErrNoDC = errors.New("no domain controller could be reached")
	// ErrPDCUnavailable: the DC that holds the PDC emulator role could not
	// be reached and bound. Writes that all writers must make on one DC
	// (the ASA roll's claim and password) wait for it rather than go to
	// another DC.
	ErrPDCUnavailable = errors.New("the PDC emulator could not be reached")
)

// hints tell the administrator what to do about each kind of failure.
var hints = map[error]string{
	ErrSystemOnly:          "a Samba DC takes resource-based delegation only from samba-tool delegation add-principal TARGET$ PRINCIPAL, run on the DC; a Windows DC takes it over LDAP",
	ErrConflict:            "another process changed the value first: read it again and decide anew",
	ErrNoDC:                "check that a DC answers on LDAP (636 or 389) from here, the URLs or the Locator's domain and DNS, and the bind identity",
	ErrPDCUnavailable:      "rolls wait: from here the PDC emulator, or a majority of the domain's writable DCs, cannot be reached, or the DCs disagree on the holder; check the DCs and the network from this host first; only if the holder is gone for good, seize the role on another DC and remove the dead DC's metadata (ntdsutil metadata cleanup, or samba-tool domain demote --remove-other-dead-server)",
	ErrNotFound:            "check the name (sAMAccountName, UPN or DN) and the base DN",
	ErrAmbiguous:           "pass the distinguished name instead",
	ErrExists:              "the name is taken; pick another or remove the old object",
	ErrPasswordPolicy:      "use a longer or more complex password (GeneratePassword meets any default policy), or check the minimum password age and history",
	ErrUnwilling:           "password writes need an encrypted connection and some attributes are system-owned; see the diagnostic",
	ErrDuplicateSPN:        "remove the SPN from the account that holds it (RemoveSPN) or register another",
	ErrInsufficientRights:  "bind as an account with the right (msDS-AllowedToDelegateTo needs SeEnableDelegationPrivilege, i.e. Domain Admins)",
	ErrMachineAccountQuota: "bind as a Domain Admin or pre-create the computer account",
	ErrInvalidCredentials:  "check the bind user and password",
	ErrTLSRequired:         "connect with ldaps:// or let Dial use StartTLS",
	ErrSigningRequired:     "use SimpleBind over TLS, or on a Samba DC set 'ldap server require strong auth = allow_sasl_over_tls' (Windows DCs accept GSSAPI inside TLS)",
}

// Error is an Active Directory operation that failed. It keeps the LDAP
// result code and the AD extended error code parsed from the DC's
// diagnostic message. It never holds a password.
type Error struct {
	Op         string // what segkcd was doing, e.g. "reset password"
	Object     string // the DN or name acted on
	LDAPCode   uint16 // LDAP result code, 0 when the error is not from the DC
	Code       uint32 // AD extended error (a Win32 code, e.g. 0x52D), 0 when absent
	Data       uint32 // the "data NNN" value of a Windows diagnostic (e.g. 0x52E on bind), 0 when absent
	Diagnostic string // the DC's diagnostic message
	Kind       error  // one of the Err* sentinels, or nil
	Err        error  // the underlying error (*ldap.Error, a context error, ...)
}

// Hint is what an administrator can do about the failure, or "" when
// there is no advice (the same text Error includes).
func (e *Error) Hint() string { return hints[e.Kind] }

// Error formats the failure with what to do about it.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("ad: ")
	b.WriteString(e.Op)
	if e.Object != "" {
		b.WriteString(" ")
		b.WriteString(e.Object)
	}
	b.WriteString(": ")
	switch {
	case e.Kind != nil:
		if ctx := context_(e.Err); ctx != "" {
			b.WriteString(ctx + ": ")
		}
		b.WriteString(e.Kind.Error())
	case e.Err != nil && e.Diagnostic != "":
		// The DC's text follows once, below.
		if ctx := context_(e.Err); ctx != "" {
			b.WriteString(ctx)
		} else {
			b.WriteString("failed")
		}
	case e.Err != nil:
		b.WriteString(errText(e.Err))
	default:
		b.WriteString("failed")
	}
	var codes []string
	if e.LDAPCode != 0 {
		codes = append(codes, fmt.Sprintf("LDAP %d %s", e.LDAPCode, ldap.LDAPResultCodeMap[e.LDAPCode]))
	}
	if e.Code != 0 {
		label := "AD"
		if e.Code&0xFFFF0000 == 0x80090000 {
			label = "SSPI" // a security-package status (SEC_E_...), not a directory error
		}
		codes = append(codes, fmt.Sprintf("%s %08X", label, e.Code))
	}
	if len(codes) > 0 {
		b.WriteString(" (" + strings.Join(codes, ", ") + ")")
	}
	if h := e.Hint(); h != "" {
		b.WriteString(": " + h)
	}
	if e.Diagnostic != "" {
		b.WriteString("; DC says: " + strings.TrimSpace(e.Diagnostic))
	} else if e.Kind != nil && e.Err != nil && e.LDAPCode == 0 && e.Err != e.Kind {
		b.WriteString("; " + errText(e.Err))
	}
	return b.String()
}

// errText is an error's text without go-ldap's "LDAP Result Code N" prefix,
// keeping what wraps it ("StartTLS: ...").
func errText(err error) string {
	var le *ldap.Error
	if errors.As(err, &le) && le.Err != nil {
		return strings.Replace(err.Error(), le.Error(), le.Err.Error(), 1)
	}
	return err.Error()
}

// context_ is what wraps an LDAP error in err ("StartTLS" of "StartTLS:
// LDAP Result Code ..."), or "" when nothing does.
func context_(err error) string {
	var le *ldap.Error
	if err == nil || !errors.As(err, &le) {
		return ""
	}
	s := strings.Replace(err.Error(), le.Error(), "", 1)
	return strings.TrimRight(strings.TrimSpace(s), ":")
}

// Unwrap gives errors.Is and errors.As both the sentinel and the cause.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// DuplicateSPNError names the accounts that already hold an SPN (or its
// HOST/ alias). errors.Is(err, ErrDuplicateSPN) is true for it.
type DuplicateSPNError struct {
	SPN     string   // the SPN asked for
	Match   string   // the SPN found, which may be the HOST/ alias
	Holders []string // DNs of the accounts holding it
}

// Error names the SPN and its holders.
func (e *DuplicateSPNError) Error() string {
	s := "SPN " + e.SPN
	if !strings.EqualFold(e.Match, e.SPN) {
		s += " (as its alias " + e.Match + ")"
	}
	return s + " is already registered on " + strings.Join(e.Holders, "; ")
}

// Is makes errors.Is(err, ErrDuplicateSPN) true.
func (e *DuplicateSPNError) Is(target error) bool { return target == ErrDuplicateSPN }

// Diagnostic is an AD diagnostic message taken apart. AD (and Samba) start
// the message with the extended error in 8 hex digits, e.g.
// "0000052D: Constraint violation - check_password_restrictions: ...";
// Windows adds "data NNN" on some errors, e.g. "80090308: LdapErr:
// DSID-0C09041C, comment: AcceptSecurityContext error, data 52e, v4563".
type Diagnostic struct {
	Code    uint32 // the leading code
	Data    uint32 // the value after "data ", when HasData
	HasData bool
	Text    string // the message after "XXXXXXXX: "
}

// ParseDiagnostic parses an AD diagnostic message. ok is false when the
// message does not start with an 8-digit hex code and a colon.
func ParseDiagnostic(msg string) (d Diagnostic, ok bool) {
	msg = strings.TrimLeft(msg, " \t\r\n")
	if len(msg) < 9 || msg[8] != ':' {
		return d, false
	}
	code, err := strconv.ParseUint(msg[:8], 16, 32)
	if err != nil || strings.ContainsAny(msg[:8], "+-xX_") {
		return d, false
	}
	d.Code = uint32(code)
	d.Text = strings.TrimSpace(msg[9:])
	rest := d.Text
	for {
		i := strings.Index(rest, "data ")
		if i < 0 {
			break
		}
		if i > 0 && rest[i-1] != ' ' && rest[i-1] != ',' {
			rest = rest[i+5:]
			continue
		}
		j := i + 5
		k := j
		for k < len(rest) && k-j < 8 && isHex(rest[k]) {
			k++
		}
		if k > j && (k == len(rest) || rest[k] == ',' || rest[k] == ' ' || rest[k] == '\n') {
			v, err := strconv.ParseUint(rest[j:k], 16, 32)
			if err == nil {
				d.Data, d.HasData = uint32(v), true
			}
			break
		}
		rest = rest[j:]
	}
	return d, true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// AD extended error codes that segkcd maps to sentinels.
const (
	codeGenFailure          = 0x0000001F
	codeUserExists          = 0x00000524
	codePasswordRestriction = 0x0000052D
	codeMemberInAlias       = 0x00000562 // ERROR_MEMBER_IN_ALIAS
	codeMemberNotInAlias    = 0x00000561 // ERROR_MEMBER_NOT_IN_ALIAS
	codeMachineQuota        = 0x0000216D
	codeDuplicateSPN        = 0x000021C7
	codeUnwilling           = 0x00002077
	codeInsufficientRights  = 0x00002098
)

// classify picks the sentinel for an LDAP result and AD code.
func classify(ldapCode uint16, code uint32) error {
	switch code {
	case codePasswordRestriction:
		return ErrPasswordPolicy
	case codeDuplicateSPN:
		return ErrDuplicateSPN
	case codeInsufficientRights:
		return ErrInsufficientRights
	case codeUserExists:
		return ErrExists
	case codeMachineQuota:
		return ErrMachineAccountQuota
	}
	switch ldapCode {
	case ldap.LDAPResultNoSuchObject:
		return ErrNotFound
	case ldap.LDAPResultInvalidDNSyntax:
		return ErrInvalidArgument
	case ldap.LDAPResultEntryAlreadyExists:
		return ErrExists
	case ldap.LDAPResultInsufficientAccessRights:
		return ErrInsufficientRights
	case ldap.LDAPResultInvalidCredentials:
		return ErrInvalidCredentials
	case ldap.LDAPResultStrongAuthRequired, ldap.LDAPResultConfidentialityRequired:
		return ErrTLSRequired
	case ldap.LDAPResultUnwillingToPerform:
		if code == codeUnwilling || code == codeGenFailure || code == 0 {
			return ErrUnwilling
		}
	case ldap.LDAPResultConstraintViolation:
		if code == codePasswordRestriction {
			return ErrPasswordPolicy
		}
	}
	if code == codeUnwilling {
		return ErrUnwilling
	}
	return nil
}

// wrap turns any error from an operation into an *Error.
func wrap(op, object string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	out := &Error{Op: op, Object: object, Err: err}
	var le *ldap.Error
	if errors.As(err, &le) {
		out.LDAPCode = le.ResultCode
		if le.ResultCode == ldap.ErrorNetwork || le.ResultCode >= 200 {
			out.LDAPCode = 0 // go-ldap's client-side codes are not DC results
		}
		if le.Err != nil && out.LDAPCode != 0 {
			msg := le.Err.Error()
			out.Diagnostic = msg
			if d, ok := ParseDiagnostic(msg); ok {
				out.Code, out.Data = d.Code, d.Data
			}
		}
		out.Kind = classify(out.LDAPCode, out.Code)
		return out
	}
	for _, s := range []error{ErrNotFound, ErrAmbiguous, ErrExists, ErrDuplicateSPN, ErrTLSRequired,
		ErrUnconstrainedDelegation, ErrInvalidArgument, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, s) {
			if s != context.Canceled && s != context.DeadlineExceeded {
				out.Kind = s
			}
			break
		}
	}
	return out
}

// invalid is an ErrInvalidArgument with a reason.
func invalid(op, object, format string, args ...any) error {
	return &Error{Op: op, Object: object, Kind: ErrInvalidArgument, Err: fmt.Errorf(format, args...)}
}
