package seg

import (
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/segkcd/segkcd/kerberos"
)

// Names maps the names a device presents (a UPN from its certificate or
// Basic login, DOMAIN\user, or a bare account name) to the user that
// S4U2Self is asked for. A UPN whose suffix is one of the domain's is reduced
// to the account name, because with an enterprise name Samba's KDC keeps
// "alice@corp.example.test" as the ticket's client name, which backends that
// read the name (not the PAC) do not expect; a UPN with another suffix is
// passed on as an enterprise name for the KDC to resolve.
//
// The zero value accepts bare names only.
type Names struct {
	// Realm is the Kerberos realm of the users, e.g. CORP.EXAMPLE.COM. Its
	// lower case is a UPN suffix of the domain.
	Realm string
	// Suffixes are further UPN suffixes of the domain (alternative UPN
	// suffixes, e.g. example.com).
	Suffixes []string
	// NetBIOS is the domain's NetBIOS name, for DOMAIN\user.
	NetBIOS string
	// OtherSuffixes lets UPNs with suffixes not listed through as enterprise
	// names. Off by default: a certificate for someone@elsewhere is refused.
	// Users of a domain that trusts the gateway's (bob@other.example.com)
	// need it: when the krb5 configuration lists that domain's realm, the
	// kerberos.Client impersonates them across the trust.
	OtherSuffixes bool
}

// ErrBadName is matched by the error for a name that cannot be a user of
// this domain.
var ErrBadName = errors.New("seg: not a user name of this domain")

// User returns the S4U2Self user for name.
func (n Names) User(name string) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	if i := strings.IndexByte(name, '\\'); i >= 0 {
		dom, user := name[:i], name[i+1:]
		if !n.isDomain(dom) {
			return "", nameErr("domain " + printable(dom) + " is not this domain's")
		}
		return n.bare(user)
	}
	if i := strings.LastIndexByte(name, '@'); i >= 0 {
		user, suffix := name[:i], name[i+1:]
		if n.isSuffix(suffix) {
			return n.bare(user)
		}
		if n.OtherSuffixes && user != "" && suffix != "" && !strings.ContainsAny(user, "@\\") {
			return name, nil
		}
		return "", nameErr("UPN suffix " + printable(suffix) + " is not this domain's")
	}
	return n.bare(name)
}

// Same reports whether two names given by a device mean the same user: the
// EAS User parameter against the authenticated user. The comparison
// upper-cases rune by rune as AD does and never case-folds, so "kelly" and
// "\u212aelly" (Kelvin sign), which AD keeps apart, stay apart.
func (n Names) Same(a, b string) bool {
	ua, err := n.User(a)
	if err != nil {
		return false
	}
	ub, err := n.User(b)
	if err != nil {
		return false
	}
	return kerberos.EqualNames(ua, ub)
}

func (n Names) bare(user string) (string, error) {
	if user == "" || strings.ContainsAny(user, "@\\") {
		return "", nameErr("empty or compound account name")
	}
	return user, nil
}

func (n Names) isDomain(dom string) bool {
	if dom == "" {
		return false
	}
	if n.NetBIOS != "" && kerberos.EqualNames(dom, n.NetBIOS) {
		return true
	}
	return n.isSuffix(dom)
}

func (n Names) isSuffix(s string) bool {
	if s == "" {
		return false
	}
	if n.Realm != "" && kerberos.EqualNames(s, n.Realm) {
		return true
	}
	for _, x := range n.Suffixes {
		if kerberos.EqualNames(s, x) {
			return true
		}
	}
	return false
}

// checkName refuses what cannot be an AD name and what would change the
// principal's shape: control characters, '/', invalid UTF-8, over-long.
func checkName(s string) error {
	if s == "" || len(s) > maxUserLen || !utf8.ValidString(s) {
		return nameErr("empty, over-long or invalid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) || r == '/' {
			return nameErr("holds a control character or '/'")
		}
	}
	return nil
}

func nameErr(why string) error { return &nameError{why} }

type nameError struct{ why string }

func (e *nameError) Error() string        { return "seg: user name: " + e.why }
func (e *nameError) Is(target error) bool { return target == ErrBadName }
