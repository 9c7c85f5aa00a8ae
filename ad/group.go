package ad

import (
	"context"
	"errors"
	"strconv"

	"github.com/go-ldap/ldap/v3"

	"github.com/segkcd/segkcd"
)

// AddGroupMember adds an account to a group. A member already in the group,
// directly or as its primary group (computers and Domain Computers), is
// reported segkcd.Unchanged.
func (c *Conn) AddGroupMember(ctx context.Context, group, member string) (segkcd.Change, error) {
	return c.editMember(ctx, "add group member", group, member, true)
}

// RemoveGroupMember removes an account from a group; a non-member is
// reported segkcd.Unchanged. AD refuses to remove a primary group membership.
func (c *Conn) RemoveGroupMember(ctx context.Context, group, member string) (segkcd.Change, error) {
	return c.editMember(ctx, "remove group member", group, member, false)
}

func (c *Conn) editMember(ctx context.Context, op, group, member string, add bool) (segkcd.Change, error) {
	g, err := c.FindAccount(ctx, group)
	if err != nil {
		return segkcd.Change{}, err
	}
	if !g.IsGroup() {
		return segkcd.Change{}, invalid(op, g.DN, "%s is not a group", g.SAMAccountName)
	}
	m, err := c.FindAccount(ctx, member)
	if err != nil {
		return segkcd.Change{}, err
	}
	in, primary, err := c.isMember(ctx, op, g, m)
	if err != nil {
		return segkcd.Change{}, err
	}
	if in == add {
		how := "member " + m.DN
		if primary {
			how += " (primary group)"
		}
		return segkcd.Change{What: op, Action: segkcd.Unchanged, Object: g.DN, Details: []string{how}}, nil
	}
	if primary && !add {
		return segkcd.Change{}, &Error{Op: op, Object: g.DN, Kind: ErrUnwilling,
			Err: errors.New("it is the member's primary group; set another primary group first")}
	}
	mod := ldap.NewModifyRequest(g.DN, nil)
	detail := "member += " + m.DN
	if add {
		mod.Add("member", []string{m.DN})
	} else {
		mod.Delete("member", []string{m.DN})
		detail = "member -= " + m.DN
	}
	err = c.do(ctx, op, g.DN, func(l *ldap.Conn) error { return l.Modify(mod) })
	var e *Error
	if errors.As(err, &e) {
		// Someone else got there between our read and our write.
		if add && (e.Code == codeMemberInAlias || e.LDAPCode == ldap.LDAPResultEntryAlreadyExists ||
			e.LDAPCode == ldap.LDAPResultAttributeOrValueExists) ||
			!add && (e.Code == codeMemberNotInAlias || e.LDAPCode == ldap.LDAPResultNoSuchAttribute) {
			return segkcd.Change{What: op, Action: segkcd.Unchanged, Object: g.DN, Details: []string{"member " + m.DN}}, nil
		}
	}
	if err != nil {
		return segkcd.Change{}, err
	}
	return segkcd.Change{What: op, Action: segkcd.Modified, Object: g.DN, Details: []string{detail}}, nil
}

// isMember checks direct membership with a base search on the group for
// (member=DN), which works for groups of any size, and primary-group
// membership through primaryGroupToken.
func (c *Conn) isMember(ctx context.Context, op string, g, m *Account) (in, primary bool, err error) {
	ents, err := c.search(ctx, op, ldap.NewSearchRequest(g.DN, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		0, 0, false, "(member="+ldap.EscapeFilter(m.DN)+")", []string{"primaryGroupToken"}, nil))
	if err != nil {
		return false, false, err
	}
	if len(ents) == 1 {
		return true, false, nil
	}
	tok, err := c.search(ctx, op, ldap.NewSearchRequest(g.DN, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=*)", []string{"primaryGroupToken"}, nil))
	if err != nil {
		return false, false, err
	}
	if len(tok) == 1 {
		if t, err := strconv.Atoi(tok[0].GetAttributeValue("primaryGroupToken")); err == nil && t != 0 && t == m.PrimaryGroupID {
			return true, true, nil
		}
	}
	return false, false, nil
}
