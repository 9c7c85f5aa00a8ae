package ad

import (
	"context"
	"errors"

	"github.com/go-ldap/ldap/v3"

	"github.com/segkcd/segkcd"
)

// NoteAttribute is where ReadNote and SwapNote keep a note: "info", the
// Notes field on ADUC's Telephones tab, single-valued, up to 1024
// characters, writable by whoever manages the account.
const NoteAttribute = "info"

// ReadNote returns an account's note ("" when it has none). Processes that
// share an account (gateway replicas rolling the ASA) keep their state
// there, in AD itself, so they need no lock server.
func (c *Conn) ReadNote(ctx context.Context, account string) (string, error) {
	const op = "read note"
	acct, err := c.FindAccount(ctx, account)
	if err != nil {
		return "", wrap(op, account, err)
	}
	return c.noteOf(ctx, op, acct.DN)
}

// noteOf reads the note of the object at dn.
func (c *Conn) noteOf(ctx context.Context, op, dn string) (string, error) {
	req := ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 0, false,
		"(objectClass=*)", []string{NoteAttribute}, nil)
	es, err := c.searchFor(ctx, op, dn, req)
	if err != nil {
		return "", err
	}
	if len(es) == 0 {
		return "", &Error{Op: op, Object: dn, Kind: ErrNotFound, Err: errors.New("no such object")}
	}
	return es[0].GetAttributeValue(NoteAttribute), nil
}

// SwapNote replaces an account's note with next if it still is old, in
// one LDAP modify (delete the old value, add the new one), which the DC
// applies atomically: of several processes swapping from the same old
// value, exactly one succeeds and the others get ErrConflict. old "" means
// the account has no note; next "" removes it.
func (c *Conn) SwapNote(ctx context.Context, account, old, next string) (segkcd.Change, error) {
	const op = "swap note"
	if len(next) > 1024 {
		return segkcd.Change{}, invalid(op, account, "a note of %d characters; AD keeps at most 1024", len(next))
	}
	acct, err := c.FindAccount(ctx, account)
	if err != nil {
		return segkcd.Change{}, wrap(op, account, err)
	}
	if old == next {
		cur, err := c.noteOf(ctx, op, acct.DN)
		if err != nil {
			return segkcd.Change{}, err
		}
		if cur != old {
			return segkcd.Change{}, &Error{Op: op, Object: acct.DN, Kind: ErrConflict, Err: errors.New("the note is not what was read")}
		}
		return segkcd.Change{What: op, Object: acct.DN, Action: segkcd.Unchanged}, nil
	}
	mod := ldap.NewModifyRequest(acct.DN, nil)
	if old != "" {
		mod.Delete(NoteAttribute, []string{old})
	}
	if next != "" {
		mod.Add(NoteAttribute, []string{next})
	}
	err = c.do(ctx, op, acct.DN, func(l *ldap.Conn) error { return l.Modify(mod) })
	var le *ldap.Error
	if errors.As(err, &le) && (le.ResultCode == ldap.LDAPResultNoSuchAttribute || le.ResultCode == ldap.LDAPResultAttributeOrValueExists ||
		le.ResultCode == ldap.LDAPResultConstraintViolation) {
		return segkcd.Change{}, &Error{Op: op, Object: acct.DN, Kind: ErrConflict, Err: err}
	}
	if err != nil {
		return segkcd.Change{}, err
	}
	action := segkcd.Modified
	switch {
	case old == "":
		action = segkcd.Created
	case next == "":
		action = segkcd.Removed
	}
	return segkcd.Change{What: op, Object: acct.DN, Action: action, Details: []string{NoteAttribute}}, nil
}
