package ad

import (
	"context"
	"crypto/rand"
	"errors"
	"math/big"
	"strings"
	"unicode/utf8"

	"github.com/go-ldap/ldap/v3"
	"golang.org/x/text/encoding/unicode"

	"github.com/segkcd/segkcd"
)

// encodePassword gives the unicodePwd value AD expects: the password in
// double quotes, encoded UTF-16LE without a byte order mark.
func encodePassword(pw string) (string, error) {
	if strings.ContainsRune(pw, 0) {
		return "", errors.New("password holds a NUL character")
	}
	// The encoder would silently replace invalid bytes with U+FFFD and so
	// set a different password than the caller holds.
	if !utf8.ValidString(pw) {
		return "", errors.New("password is not valid UTF-8")
	}
	enc := unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM).NewEncoder()
	out, err := enc.String(`"` + pw + `"`)
	if err != nil {
		return "", errors.New("password is not valid UTF-8") // never echo the password
	}
	return out, nil
}

// ResetPassword sets an account's password without knowing the old one
// (an administrator's reset: one Replace of unicodePwd). It refuses to run
// over a connection without TLS.
func (c *Conn) ResetPassword(ctx context.Context, account, newPassword string) (segkcd.Change, error) {
	const op = "reset password"
	if err := c.requireTLS(op, account); err != nil {
		return segkcd.Change{}, err
	}
	if newPassword == "" {
		return segkcd.Change{}, invalid(op, account, "empty password")
	}
	encoded, err := encodePassword(newPassword)
	if err != nil {
		return segkcd.Change{}, invalid(op, account, "%v", err)
	}
	acct, err := c.FindAccount(ctx, account)
	if err != nil {
		return segkcd.Change{}, wrap(op, account, err)
	}
	mod := ldap.NewModifyRequest(acct.DN, nil)
	mod.Replace("unicodePwd", []string{encoded})
	if err := c.do(ctx, op, acct.DN, func(l *ldap.Conn) error { return l.Modify(mod) }); err != nil {
		return segkcd.Change{}, err
	}
	// A reset always writes: AD keeps no way to compare without a logon.
	return segkcd.Change{What: op, Object: acct.DN, Action: segkcd.Modified, Details: []string{"unicodePwd (new password)"}}, nil
}

// ChangePassword changes a password knowing the old one, as the user
// would (Delete of the old value and Add of the new in one modify; the
// domain's minimum password age and history apply). It refuses to run over
// a connection without TLS.
func (c *Conn) ChangePassword(ctx context.Context, account, oldPassword, newPassword string) (segkcd.Change, error) {
	const op = "change password"
	if err := c.requireTLS(op, account); err != nil {
		return segkcd.Change{}, err
	}
	if newPassword == "" || oldPassword == "" {
		return segkcd.Change{}, invalid(op, account, "empty password")
	}
	oldEnc, err := encodePassword(oldPassword)
	if err != nil {
		return segkcd.Change{}, invalid(op, account, "old %v", err)
	}
	newEnc, err := encodePassword(newPassword)
	if err != nil {
		return segkcd.Change{}, invalid(op, account, "new %v", err)
	}
	acct, err := c.FindAccount(ctx, account)
	if err != nil {
		return segkcd.Change{}, wrap(op, account, err)
	}
	mod := ldap.NewModifyRequest(acct.DN, nil)
	mod.Delete("unicodePwd", []string{oldEnc})
	mod.Add("unicodePwd", []string{newEnc})
	if err := c.do(ctx, op, acct.DN, func(l *ldap.Conn) error { return l.Modify(mod) }); err != nil {
		return segkcd.Change{}, err
	}
	return segkcd.Change{What: op, Object: acct.DN, Action: segkcd.Modified, Details: []string{"unicodePwd (new password)"}}, nil
}

// Character classes of generated passwords. The symbols leave out quotes,
// backslash, backtick, $ and spaces, which are hazards wherever an
// administrator pastes a password into a shell or PowerShell by hand.
const (
	pwUpper   = "ABCDEFGHJKLMNPQRSTUVWXYZ"
	pwLower   = "abcdefghijkmnopqrstuvwxyz"
	pwDigit   = "23456789"
	pwSymbol  = "!#%+,-./:=?@[]^_{}~"
	pwAll     = pwUpper + pwLower + pwDigit + pwSymbol
	pwDefault = 64
	pwMax     = 256 // AD's limit on a password's length
)

// GeneratePassword returns a random password from crypto/rand with at least
// one upper-case letter, lower-case letter, digit and symbol, so it meets
// AD's complexity rule. length 0 means 64; lengths from 8 to 256 are
// accepted. The password never contains any of avoid (case-insensitive, 3
// characters or longer), as AD's complexity rule refuses a password
// holding the account name.
func GeneratePassword(length int, avoid ...string) (string, error) {
	if length == 0 {
		length = pwDefault
	}
	if length < 8 || length > pwMax {
		return "", errors.New("ad: password length must be from 8 to 256")
	}
	for {
		pw, err := randomPassword(length)
		if err != nil {
			return "", err
		}
		if !containsAny(pw, avoid) {
			return pw, nil
		}
	}
}

func randomPassword(length int) (string, error) {
	b := make([]byte, length)
	// One of each class first, the rest from all classes, then shuffle.
	for i, set := range []string{pwUpper, pwLower, pwDigit, pwSymbol} {
		ch, err := pick(set)
		if err != nil {
			return "", err
		}
		b[i] = ch
	}
	for i := 4; i < length; i++ {
		ch, err := pick(pwAll)
		if err != nil {
			return "", err
		}
		b[i] = ch
	}
	for i := length - 1; i > 0; i-- {
		j, err := rand.Int(rand.Reader, big.NewInt(int64(i+1)))
		if err != nil {
			return "", err
		}
		b[i], b[j.Int64()] = b[j.Int64()], b[i]
	}
	return string(b), nil
}

func pick(set string) (byte, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(int64(len(set))))
	if err != nil {
		return 0, err
	}
	return set[n.Int64()], nil
}

func containsAny(pw string, avoid []string) bool {
	lower := strings.ToLower(pw)
	for _, a := range avoid {
		a = strings.ToLower(strings.TrimSuffix(a, "$"))
		if len(a) >= 3 && strings.Contains(lower, a) {
			return true
		}
	}
	return false
}
