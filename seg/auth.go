package seg

import (
	"crypto/x509"
	"errors"
	"net/http"
)

// Identity is the user a device authenticated as.
type Identity struct {
	// User is the name S4U2Self is asked for (see Names).
	User string
	// Name is what the device presented: the certificate's UPN, e-mail or
	// CN, or the Basic login name.
	Name string
	// Method is "certificate" or "basic".
	Method string
	// Certificate is the device's certificate, for certificate logins.
	Certificate *x509.Certificate
}

var (
	// ErrNoCredentials: the request carries no credentials the
	// authenticator understands. AnyOf tries the next one.
	ErrNoCredentials = errors.New("seg: no credentials")
	// ErrBadCredentials: the credentials are wrong (password, certificate
	// that names no user of the domain, revoked certificate).
	ErrBadCredentials = errors.New("seg: credentials refused")
)

// AnyOf tries authenticators in order and returns the first answer that is
// not ErrNoCredentials: certificate devices and Basic devices on one
// listener (tls.VerifyClientCertIfGiven).
func AnyOf(auths ...func(*http.Request) (*Identity, error)) func(*http.Request) (*Identity, error) {
	return func(r *http.Request) (*Identity, error) {
		for _, a := range auths {
			id, err := a(r)
			if errors.Is(err, ErrNoCredentials) {
				continue
			}
			return id, err
		}
		return nil, ErrNoCredentials
	}
}
