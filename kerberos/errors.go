package kerberos

import (
	"errors"
	"fmt"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/errorcode"
	"github.com/jcmturner/gokrb5/v8/messages"
)

// KDC error codes (RFC 4120 7.5.9) that callers branch on.
const (
	CodeCPrincipalUnknown int32 = 6
	CodeSPrincipalUnknown int32 = 7
	CodePolicy            int32 = 12
	CodeBadOption         int32 = 13
	CodeETypeNoSupp       int32 = 14
	CodePADataTypeNoSupp  int32 = 16
	CodeClientRevoked     int32 = 18
	CodePreauthFailed     int32 = 24
	CodePreauthRequired   int32 = 25
	CodeSvcUnavailable    int32 = 29 // KDC_ERR_SVC_UNAVAILABLE: a busy or starting KDC
	CodeSkew              int32 = 37
	CodeResponseTooBig    int32 = 52
	CodeWrongRealm        int32 = 68
	// Codes with which a KDC rejects the service TGT itself, e.g. after the
	// krbtgt key changed twice: the client drops the TGT, logs in again
	// once and retries the request once.
	CodeTGTRevoked   int32 = 20 // KDC_ERR_TGT_REVOKED
	CodeBadIntegrity int32 = 31 // KRB_AP_ERR_BAD_INTEGRITY
	CodeTktExpired   int32 = 32 // KRB_AP_ERR_TKT_EXPIRED
	CodeModified     int32 = 41 // KRB_AP_ERR_MODIFIED
	CodeBadKeyVer    int32 = 44 // KRB_AP_ERR_BADKEYVER
)

// rejectsTGT reports whether a TGS error code says the TGT itself is no good.
func rejectsTGT(code int32) bool {
	switch code {
	case CodeTGTRevoked, CodeBadIntegrity, CodeTktExpired, CodeModified, CodeBadKeyVer:
		return true
	}
	return false
}

// Sentinels for errors.Is. A *KDCError matches the sentinel of its code.
var (
	// ErrClientUnknown: the user (S4U2Self) or the service account (AS) is not in the directory (6).
	ErrClientUnknown = errors.New("client principal unknown")
	// ErrServerUnknown: no account holds the SPN (7).
	ErrServerUnknown = errors.New("server principal unknown: no account holds the SPN")
	// ErrPolicy: the KDC's policy refuses, e.g. a disabled or locked account
	// (12 KDC_ERR_POLICY on Samba, 18 KDC_ERR_CLIENT_REVOKED on Windows).
	ErrPolicy = errors.New("refused by KDC policy (account disabled, locked or expired?)")
	// ErrNotDelegable: S4U2Proxy refused (13 KDC_ERR_BADOPTION): the SPN is not
	// in msDS-AllowedToDelegateTo, or the evidence ticket is not forwardable.
	ErrNotDelegable = errors.New("delegation refused")
	// ErrETypeNotSupported: no common encryption type; for S4U2Proxy also an
	// SPN on an account without keys (14).
	// ErrWeakEncryption: a ticket, key or session key in RC4-HMAC or DES,
	// which the client refuses unless AllowRC4 (CVE-2026-20833).
	ErrWeakEncryption    = errors.New("RC4 or DES encryption refused (AES only since the 2026 Kerberos hardening)")
	ErrETypeNotSupported = errors.New("no supported encryption type (or the target account has no keys)")
	// ErrPreauthFailed: wrong password or key (24).
	ErrPreauthFailed = errors.New("pre-authentication failed: wrong password or key")
	// ErrClockSkew: clocks differ by more than the KDC allows (37).
	ErrClockSkew = errors.New("clock skew too great")
	// ErrPADataTypeNotSupported: the KDC does not know a padata type we sent (16).
	ErrPADataTypeNotSupported = errors.New("padata type not supported")
	// ErrEvidenceNotForwardable: the S4U2Self ticket is not forwardable, so
	// S4U2Proxy would fail. Found before asking the KDC: the service account
	// lacks TRUSTED_TO_AUTH_FOR_DELEGATION, its TGT is not forwardable, or the
	// user is sensitive (NOT_DELEGATED).
	ErrEvidenceNotForwardable = errors.New("evidence ticket not forwardable")
	// ErrNoKDC: no KDC answered.
	ErrNoKDC = errors.New("no KDC answered")
	// ErrBadReply: a KDC reply failed verification (nonce, names, decryption).
	ErrBadReply = errors.New("KDC reply failed verification")
	// ErrAccountChanged: the name asked for now belongs to another account
	// than the one it was resolved to (a rename, a UPN moved): the ticket
	// would speak for someone else (ImpersonateAccount).
	ErrAccountChanged = errors.New("the name now belongs to another account")
)

var sentinelOf = map[int32]error{
	CodeCPrincipalUnknown: ErrClientUnknown,
	CodeSPrincipalUnknown: ErrServerUnknown,
	CodePolicy:            ErrPolicy,
	CodeClientRevoked:     ErrPolicy,
	CodeBadOption:         ErrNotDelegable,
	CodeETypeNoSupp:       ErrETypeNotSupported,
	CodePreauthFailed:     ErrPreauthFailed,
	CodeSkew:              ErrClockSkew,
	CodePADataTypeNoSupp:  ErrPADataTypeNotSupported,
}

// KDCError is a KRB-ERROR from the KDC. It keeps the code, its name and the
// KDC's e-text; errors.Is matches it against the sentinels above.
type KDCError struct {
	Op     string // "AS exchange", "S4U2Self", "S4U2Proxy"
	Code   int32
	Name   string // e.g. KDC_ERR_BADOPTION
	EText  string
	Realm  string
	Server string // the sname of the error
	Target string // what we asked for: the user (S4U2Self) or the SPN (S4U2Proxy)
	KDC    string // host:port of the KDC that answered
	// KDCTime is the KDC's clock from the error (zero when it sent none);
	// with KRB_AP_ERR_SKEW, Offset is how far ours is from it.
	KDCTime time.Time
	Offset  time.Duration
}

// Error says the operation, the KDC's code and name and e-text, and which KDC answered.
func (e *KDCError) Error() string {
	s := fmt.Sprintf("kerberos: %s", e.Op)
	if e.Target != "" {
		s += " " + e.Target
	}
	s += fmt.Sprintf(": KDC error %d %s", e.Code, e.Name)
	if e.EText != "" {
		s += ": " + e.EText
	}
	if sent := sentinelOf[e.Code]; sent != nil {
		s += " (" + sent.Error() + ")"
	}
	if e.Code == CodeSkew && !e.KDCTime.IsZero() {
		s += fmt.Sprintf(" (our clock is %s %s the KDC's)", e.Offset.Abs().Round(time.Second), map[bool]string{true: "ahead of", false: "behind"}[e.Offset > 0])
	}
	if e.KDC != "" {
		s += " [KDC " + e.KDC + "]"
	}
	return s
}

// Is matches the sentinel of the code.
func (e *KDCError) Is(target error) bool {
	return target != nil && sentinelOf[e.Code] == target
}

func kdcError(op, target, kdc string, k messages.KRBError, now time.Time) *KDCError {
	// Lookup gives "(13) KDC_ERR_BADOPTION KDC cannot accommodate requested option".
	name := errorcode.Lookup(k.ErrorCode)
	if i := indexByte(name, ' '); i > 0 && name[0] == '(' {
		name = name[i+1:]
	}
	if i := indexByte(name, ' '); i > 0 {
		name = name[:i]
	}
	e := &KDCError{Op: op, Code: k.ErrorCode, Name: name, EText: k.EText, Realm: k.Realm,
		Server: k.SName.PrincipalNameString(), Target: target, KDC: kdc}
	if !k.STime.IsZero() {
		e.KDCTime = k.STime.Add(time.Duration(k.Susec) * time.Microsecond)
		e.Offset = now.Sub(e.KDCTime)
	}
	return e
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// Error is a failure that is not a KDC answer: transport, encoding,
// verification or configuration. It wraps the cause.
type Error struct {
	Op     string
	Target string
	KDC    string // host:port of the KDC whose reply failed, when one did
	Err    error
}

// Error says the operation, its target and the cause.
func (e *Error) Error() string {
	s := "kerberos: " + e.Op
	if e.Target != "" {
		s += " " + e.Target
	}
	s += ": " + e.Err.Error()
	if e.KDC != "" {
		s += " [KDC " + e.KDC + "]"
	}
	return s
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

func fail(op, target string, err error) error {
	if err == nil {
		return nil
	}
	var ke *KDCError
	var e *Error
	if errors.As(err, &ke) || errors.As(err, &e) {
		return err
	}
	return &Error{Op: op, Target: target, Err: err}
}

// failKDC is fail for a reply from a named KDC.
func failKDC(op, target, kdc string, err error) error {
	err = fail(op, target, err)
	var e *Error
	if errors.As(err, &e) && e.KDC == "" {
		e.KDC = kdc
	}
	return err
}
