package exchange

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/kerberos"
)

// Roll describes a roll of the ASA password: a new password on every
// server, then in AD.
type Roll struct {
	// Servers to roll, e.g. every Client Access server of the namespace. The
	// first gets the new password; the others copy it from the first.
	Servers []string
	// User is the credential as Exchange holds it: `CORP\EXCHASA$`.
	User string
	// AD resets the ASA's password once every server has it.
	AD *ad.Conn
	// PasswordLength of the generated password (default 120, the length
	// computers use for their own passwords).
	PasswordLength int
	// KeytabRealm, when set, makes the roll return a keytab of the ASA's new
	// keys (for the account and each SPN it holds), so that a non-Windows
	// backend can accept the tickets.
	KeytabRealm string
}

// RollResult is what a roll did. After a failure, Resume finishes it with
// the same password, which the result keeps (unexported) and never shows.
type RollResult struct {
	Pushed  []string       // servers that hold the new password as Latest
	ADReset bool           // the AD password was reset
	Status  []Status       // every server after the roll
	Keytab  *keytab.Keytab // when Roll.KeytabRealm was set
	Started time.Time

	roll     Roll
	password string
}

// RollASAPassword rolls the ASA password, in the order of
// RollAlternateServiceAccountPassword.ps1 -ToSpecificServers
// -GenerateNewPasswordFor, which never leaves a server unable to decrypt
// tickets:
//
//  1. Set the new password on the first server. On failure nothing changed.
//  2. Copy it to the other servers. On failure some servers hold it as
//     Latest, with the old one as Previous; AD still has the old key, which
//     every server still holds: tickets keep working. Resume copies to the
//     rest, skipping servers that already have it.
//  3. Reset the ASA's password in AD. On failure every server holds both
//     passwords and AD the old one: tickets keep working. Resume retries.
//  4. Verify that every server's Latest credential is the rolled one.
//
// If the process dies before step 3, the new password is lost; the servers
// that got it still hold the old one as Previous. A new roll then pushes the
// old one out before AD changes: expect a few seconds of failed tickets on
// those servers, until step 3 of the new roll.
func (o *Org) RollASAPassword(ctx context.Context, r Roll) (*RollResult, error) {
	if len(r.Servers) == 0 || r.AD == nil || !strings.Contains(r.User, `\`) {
		return nil, errors.New(`exchange: a roll needs servers, an AD connection and the user as DOMAIN\NAME$`)
	}
	n := r.PasswordLength
	if n == 0 {
		n = 120
	}
	sam := r.User[strings.LastIndex(r.User, `\`)+1:]
	pw, err := ad.GeneratePassword(n, sam)
	if err != nil {
		return nil, err
	}
	res := &RollResult{roll: r, password: pw, Started: time.Now().UTC()}
	return res, o.resume(ctx, res)
}

// Resume finishes a roll that failed, with the same password.
func (o *Org) Resume(ctx context.Context, res *RollResult) error {
	if res == nil || res.password == "" {
		return errors.New("exchange: nothing to resume")
	}
	return o.resume(ctx, res)
}

func (o *Org) resume(ctx context.Context, res *RollResult) error {
	r := res.roll
	first := r.Servers[0]
	if !contains(res.Pushed, first) {
		if err := o.SetASA(ctx, first, r.User, res.password); err != nil {
			return fmt.Errorf("roll step 1 (nothing changed): %w", err)
		}
		res.Pushed = append(res.Pushed, first)
	}
	src, err := o.ASAStatus(ctx, first)
	if err != nil {
		return fmt.Errorf("roll step 2: %w", err)
	}
	if src.Latest == nil {
		return fmt.Errorf("roll step 2: %s holds no credential", first)
	}
	var todo []string
	for _, s := range r.Servers[1:] {
		if contains(res.Pushed, s) {
			continue
		}
		// A server that copied it already has a Latest added after the first server's.
		st, err := o.ASAStatus(ctx, s)
		if err != nil {
			return fmt.Errorf("roll step 2 (AD unchanged; tickets still work; Resume): %w", err)
		}
		if st.Latest != nil && strings.EqualFold(st.Latest.UserName, r.User) && !st.Latest.WhenAdded.Before(src.Latest.WhenAdded) {
			res.Pushed = append(res.Pushed, s)
			continue
		}
		todo = append(todo, s)
	}
	if len(todo) > 0 {
		if err := o.CopyASA(ctx, first, todo...); err != nil {
			return fmt.Errorf("roll step 2 (AD unchanged; tickets still work; Resume): %w", err)
		}
		res.Pushed = append(res.Pushed, todo...)
	}
	sam := r.User[strings.LastIndex(r.User, `\`)+1:]
	if !res.ADReset {
		if err := r.AD.ResetPassword(ctx, sam, res.password); err != nil {
			return fmt.Errorf("roll step 3 (servers hold old and new passwords; tickets still work; Resume): %w", err)
		}
		res.ADReset = true
	}
	res.Status = res.Status[:0]
	for _, s := range r.Servers {
		st, err := o.ASAStatus(ctx, s)
		if err != nil {
			return fmt.Errorf("roll step 4: %w", err)
		}
		if st.Latest == nil || !strings.EqualFold(st.Latest.UserName, r.User) || st.Latest.WhenAdded.Before(src.Latest.WhenAdded) {
			return fmt.Errorf("roll step 4: %s does not hold the rolled credential as Latest", s)
		}
		res.Status = append(res.Status, *st)
	}
	if r.KeytabRealm != "" {
		acct, err := r.AD.FindAccount(ctx, sam)
		if err != nil {
			return fmt.Errorf("roll keytab: %w", err)
		}
		kt, err := kerberos.KeytabFromPassword(kerberos.KeytabSpec{Realm: r.KeytabRealm, SAMAccountName: acct.SAMAccountName,
			Principals: append([]string{acct.SAMAccountName}, acct.SPNs...), Password: res.password, KVNO: uint32(acct.KeyVersion)})
		if err != nil {
			return fmt.Errorf("roll keytab: %w", err)
		}
		res.Keytab = kt
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}
