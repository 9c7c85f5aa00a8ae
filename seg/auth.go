package seg

import (
	"crypto/x509"
	"errors"
	"net/http"

	"github.com/segkcd/segkcd/kerberos"
)

// Identity is the user a device authenticated as.
type Identity struct {
	// User is the account's name, which S4U2Self is asked for: its
	// sAMAccountName as the PAC spells it (name@REALM for an account of
	// another realm). It is for the KDC and the log, never a key.
	User string
	// UPN is the account's user principal name, when the PAC carries one.
	UPN string
	// ImplicitUPN says UPN is sAMAccountName@dnsdomain, not a
	// userPrincipalName of the account's own (kerberos.Account.ImplicitUPN).
	ImplicitUPN bool
	// SID is the account's security identifier from the PAC: the identity.
	// The ticket cache, the upstream pools, the held-poll bound, the
	// redirects and the policy are keyed by it; ProxyHandler refuses an
	// Identity without one (500: the authenticator is misconfigured).
	SID string
	// Name is what the device presented: the certificate's UPN (or e-mail
	// or CN when those sources are enabled), or the Basic login name.
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

// identity is the Identity of an account the directory resolved name to.
func identity(acct *kerberos.Account, name, method string) *Identity {
	return &Identity{User: acct.User, UPN: acct.UPN, ImplicitUPN: acct.ImplicitUPN, SID: acct.SID, Name: name, Method: method}
}

// account is the Identity as the account it names, for Names.Matches.
func (id *Identity) account() *kerberos.Account {
	return &kerberos.Account{User: id.User, UPN: id.UPN, ImplicitUPN: id.ImplicitUPN, SID: id.SID}
}
