package seg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/segkcd/segkcd/kerberos"
)

// Stage names the step of a request that failed.
type Stage string

// The stages of a request, in order.
const (
	StageRequest      Stage = "request"      // not an ActiveSync request (path, method, parameters)
	StageAuthenticate Stage = "authenticate" // the device's certificate or password
	StageAuthorize    Stage = "authorize"    // the User parameter, the Authorize hook
	StageTicket       Stage = "ticket"       // S4U2Self and S4U2Proxy for the user
	StageForward      Stage = "forward"      // the request to Exchange
)

// Error is a request that the gateway answered itself: which stage failed,
// the status the device got, and the cause (errors.Is finds
// kerberos.ErrNotDelegable, ErrBadCredentials and the others through it).
// ProxyHandler.ErrorHandler receives one.
type Error struct {
	Stage  Stage
	Status int    // the HTTP status for the device
	User   string // the authenticated user, once known
	Err    error
}

// Error says the stage, the user and the cause; it holds no secret.
func (e *Error) Error() string {
	s := "seg: " + string(e.Stage)
	if e.User != "" {
		s += " for " + printable(e.User)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return oneSegPrefix(s)
}

// errorf is fmt.Errorf for seg's errors: when a cause is seg's too, the
// message says "seg: " once, at its front, not once per layer ("seg:
// credentials refused: seg: the certificate's SID ..."). errors.Is and
// errors.As see through it as through fmt.Errorf's.
func errorf(format string, a ...any) error { return segError{fmt.Errorf(format, a...)} }

type segError struct{ err error }

func (e segError) Error() string { return oneSegPrefix(e.err.Error()) }
func (e segError) Unwrap() error { return e.err }

// oneSegPrefix drops the "seg: " of causes inside a message.
func oneSegPrefix(s string) string { return strings.ReplaceAll(s, ": seg: ", ": ") }

// Unwrap returns the cause, for errors.Is and errors.As.
func (e *Error) Unwrap() error { return e.Err }

// Hint is advice for an administrator, or "" when there is none.
func (e *Error) Hint() string {
	switch {
	case errors.Is(e.Err, kerberos.ErrEvidenceNotForwardable):
		return "the user cannot be delegated: clear \"Account is sensitive and cannot be delegated\" (NOT_DELEGATED) or remove the user from Protected Users; or give the service account protocol transition (TRUSTED_TO_AUTH_FOR_DELEGATION)"
	case errors.Is(e.Err, kerberos.ErrNotDelegable):
		return "the KDC refuses delegation: add the Exchange SPN to the service account's msDS-AllowedToDelegateTo, and check that the user is not sensitive"
	case errors.Is(e.Err, kerberos.ErrPolicy):
		return "the KDC refuses the account: it is disabled, locked out or expired"
	case errors.Is(e.Err, kerberos.ErrAccountChanged):
		return "the name the device's account was resolved from now belongs to another account (a rename, a UPN moved in AD): the name is asked about again and the device's next request is its new holder's"
	case errors.Is(e.Err, kerberos.ErrClientUnknown):
		return "no such user in the domain (check the name mapping: UPN suffixes, NetBIOS name)"
	case errors.Is(e.Err, kerberos.ErrServerUnknown):
		return "no account holds the Exchange SPN: register it on the ASA (setspn -S)"
	case errors.Is(e.Err, kerberos.ErrWeakEncryption):
		return "a key or ticket on the path is RC4 or DES, which the gateway refuses (the 2026 RC4 cut-off, CVE-2026-20833): set msDS-SupportedEncryptionTypes to AES (24) on the service account and the Exchange SPN's holder (the ASA), and reset their passwords so that AES keys exist"
	case errors.Is(e.Err, kerberos.ErrETypeNotSupported):
		return "the ASA has no keys of a common type, or only RC4 ones, which the gateway does not ask for (the 2026 RC4 cut-off): set its msDS-SupportedEncryptionTypes to AES (24) and roll its credential (exchange.Roll)"
	case errors.Is(e.Err, kerberos.ErrClockSkew):
		return "the gateway's clock is off from the KDC's: run NTP"
	case errors.Is(e.Err, kerberos.ErrNoKDC), isTimeout(e.Err) && (e.Stage == StageTicket || e.Stage == StageAuthenticate):
		return "no KDC answered in time: check the KDC list and that port 88 is open from the gateway"
	case errors.Is(e.Err, errUnboundTokenRefused):
		return "Exchange refused a fresh ticket sent without channel bindings: with Extended Protection set to Require (IIS tokenChecking), it refuses every such token; bind tokens (ProxyHandler.UnboundTokens off, the default UserPools transport) unless a TLS-inspecting device sits between the gateway and Exchange, or check the ASA credential (exchange.CheckASA)"
	case errors.Is(e.Err, errNoChannelBinding):
		return "the certificate Exchange showed has no tls-server-end-point channel binding (RFC 5929: its signature names no single hash, such as Ed25519); give Exchange an RSA or ECDSA certificate, or send unbound tokens (ProxyHandler.UnboundTokens) where Extended Protection is off"
	case errors.Is(e.Err, errTicketRefused):
		return "Exchange refused a fresh ticket: check the ASA credential on every server (exchange.CheckASA) and Windows authentication on the ActiveSync virtual directory; with Extended Protection, a TLS-inspecting device between the gateway and Exchange makes the token's channel binding name the device's certificate, not Exchange's (ProxyHandler.UnboundTokens, channel_bindings off, for such a device)"
	case errors.Is(e.Err, errNoReplay):
		return "Exchange refused a cached ticket and the request body was streamed, so it could not be sent again; the device will retry"
	case errors.Is(e.Err, errBodyTimeout):
		return "the device stopped sending its request body; a flaky mobile network, or a client holding connections (BodyTimeout)"
	case errors.Is(e.Err, errLongPollEnded):
		return "a newer Ping of the same device, or more than MaxLongPollsPerUser of the user's Pings and Syncs, ended this one"
	case e.Stage == StageForward && isTimeout(e.Err):
		return "Exchange did not answer in time"
	case e.Stage == StageForward:
		return "Exchange cannot be reached: check the upstream URL and its TLS certificate"
	}
	return ""
}

var (
	errNotFound      = errors.New("not an ActiveSync path")
	errMethod        = errors.New("method not allowed")
	errUserMismatch  = errors.New("the User parameter names another user")
	errNoSID         = errors.New("the authenticator named no account SID (give Names an Accounts, which asks the KDC)")
	errTicketRefused = errors.New("Exchange answered 401 to a fresh ticket")
	// errUnboundTokenRefused is errTicketRefused for a token sent without
	// channel bindings.
	errUnboundTokenRefused = errors.New("Exchange answered 401 to a fresh ticket sent without channel bindings")
	errNoReplay            = errors.New("Exchange answered 401 and the body cannot be sent again")
	errUpstreamTime        = fmt.Errorf("no answer from Exchange in time: %w", context.DeadlineExceeded)
	errBodyTimeout         = errors.New("the device stopped sending its request body (BodyTimeout)")
)

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// statusFor chooses the device's status for a failure at a stage.
func statusFor(stage Stage, err error, basic bool) int {
	var e *Error
	if errors.As(err, &e) && e.Status != 0 {
		return e.Status
	}
	switch stage {
	case StageRequest:
		switch {
		case errors.Is(err, errNotFound):
			return http.StatusNotFound
		case errors.Is(err, errMethod):
			return http.StatusMethodNotAllowed
		}
		return http.StatusBadRequest
	case StageAuthenticate:
		switch {
		case errors.Is(err, ErrNoCredentials):
			return http.StatusUnauthorized
		case errors.Is(err, ErrBadCredentials):
			if basic {
				return http.StatusUnauthorized
			}
			return http.StatusForbidden
		case kdcUnreachable(err), errors.Is(err, kerberos.ErrAccountChanged), busy(err):
			return http.StatusServiceUnavailable
		}
		return http.StatusInternalServerError
	case StageAuthorize:
		return http.StatusForbidden
	case StageTicket:
		switch {
		case kdcUnreachable(err), errors.Is(err, kerberos.ErrAccountChanged):
			return http.StatusServiceUnavailable
		case errors.Is(err, kerberos.ErrEvidenceNotForwardable), errors.Is(err, kerberos.ErrNotDelegable),
			errors.Is(err, kerberos.ErrPolicy), errors.Is(err, kerberos.ErrClientUnknown):
			return http.StatusForbidden
		}
		return http.StatusBadGateway
	case StageForward:
		switch {
		case errors.Is(err, context.Canceled):
			return 499 // the device went away; nobody reads this status
		case isTimeout(err):
			return http.StatusGatewayTimeout
		}
		return http.StatusBadGateway
	}
	return http.StatusInternalServerError
}

// busy: a login refused before the KDC was asked, because a bound of the
// gateway's was reached (ErrNamesBusy, ErrPasswordsBusy) or the source has
// spent its failed logins (ErrSourceLimited).
func busy(err error) bool {
	return errors.Is(err, ErrNamesBusy) || errors.Is(err, ErrPasswordsBusy) || errors.Is(err, ErrSourceLimited)
}

// retryAfter is the Retry-After of a 503: soon for a bound of the gateway's
// that frees in milliseconds, later for a source that has to earn back a
// failed login, and for the rest (no KDC, shutting down) 30s.
func retryAfter(err error) string {
	switch {
	case errors.Is(err, ErrSourceLimited):
		return "60"
	case busy(err):
		return "5"
	}
	return "30"
}

// kdcUnreachable: no KDC answered, or not before the deadline.
func kdcUnreachable(err error) bool {
	return errors.Is(err, kerberos.ErrNoKDC) || isTimeout(err)
}
