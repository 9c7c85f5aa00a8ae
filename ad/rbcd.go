package ad

import (
	"context"
	"errors"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/segkcd/segkcd"
)

// attrRBCD holds resource-based constrained delegation on the target: a
// security descriptor whose access-allowed entries name the accounts that
// may delegate to it.
const attrRBCD = "msDS-AllowedToActOnBehalfOfOtherIdentity"

// ResourceDelegation lists the accounts that may delegate to target by
// resource-based constrained delegation (RBCD): the principals of its
// msDS-AllowedToActOnBehalfOfOtherIdentity, as sAMAccountNames (a SID
// where no account of this domain has it).
func (c *Conn) ResourceDelegation(ctx context.Context, target string) ([]string, error) {
	const op = "read resource-based delegation"
	acct, sd, err := c.rbcd(ctx, op, target)
	if err != nil {
		return nil, err
	}
	if sd == nil {
		return nil, nil
	}
	return c.namesOf(ctx, op, acct.DN, sd.allowedSIDs())
}

// ResourceDelegationDescriptor reads target's
// msDS-AllowedToActOnBehalfOfOtherIdentity as it is (nil when unset).
func (c *Conn) ResourceDelegationDescriptor(ctx context.Context, target string) (*SecurityDescriptor, error) {
	_, sd, err := c.rbcd(ctx, "read resource-based delegation", target)
	return sd, err
}

// AddResourceDelegation lets principals (accounts by any name FindAccount
// takes: the gateway's service account) delegate to target by RBCD, as
// Set-ADComputer -PrincipalsAllowedToDelegateToAccount and samba-tool
// delegation add-principal do: an access-allowed entry per principal, with
// owner BUILTIN\Administrators when the attribute is new. Principals
// already there are skipped; other entries are kept. It needs no
// SeEnableDelegationPrivilege, only write access to the target.
func (c *Conn) AddResourceDelegation(ctx context.Context, target string, principals ...string) (segkcd.Change, error) {
	return c.editRBCD(ctx, "add resource-based delegation", target, principals, true)
}

// RemoveResourceDelegation removes principals from target's RBCD; the
// attribute goes when no entry is left.
func (c *Conn) RemoveResourceDelegation(ctx context.Context, target string, principals ...string) (segkcd.Change, error) {
	return c.editRBCD(ctx, "remove resource-based delegation", target, principals, false)
}

// ClearResourceDelegation removes target's RBCD altogether.
func (c *Conn) ClearResourceDelegation(ctx context.Context, target string) (segkcd.Change, error) {
	const op = "clear resource-based delegation"
	acct, sd, err := c.rbcd(ctx, op, target)
	if err != nil {
		return segkcd.Change{}, err
	}
	if sd == nil {
		return segkcd.Change{What: op, Object: acct.DN, Action: segkcd.Unchanged}, nil
	}
	mod := ldap.NewModifyRequest(acct.DN, nil)
	mod.Replace(attrRBCD, []string{})
	if err := c.modifyRBCD(ctx, op, mod); err != nil {
		return segkcd.Change{}, err
	}
	return segkcd.Change{What: op, Object: acct.DN, Action: segkcd.Removed, Details: []string{attrRBCD}}, nil
}

func (c *Conn) editRBCD(ctx context.Context, op, target string, principals []string, add bool) (segkcd.Change, error) {
	if len(principals) == 0 {
		return segkcd.Change{}, invalid(op, target, "no principal")
	}
	acct, sd, err := c.rbcd(ctx, op, target)
	if err != nil {
		return segkcd.Change{}, err
	}
	had := sd != nil
	if sd == nil {
		sd = &SecurityDescriptor{Owner: sidBuiltinAdmins, DACL: []ACE{}}
	}
	var details []string
	for _, p := range principals {
		pa, err := c.FindAccount(ctx, p)
		if err != nil {
			return segkcd.Change{}, wrap(op, p, err)
		}
		have := containsFold(sd.allowedSIDs(), pa.SID)
		switch {
		case add && !have:
			sd.DACL = append(sd.DACL, ACE{Type: ACEAccessAllowed, Mask: RBCDAccessMask, SID: pa.SID})
			details = append(details, attrRBCD+" += "+pa.SAMAccountName)
		case !add && have:
			kept := sd.DACL[:0:0]
			for _, a := range sd.DACL {
				if !(a.Type == ACEAccessAllowed && strings.EqualFold(a.SID, pa.SID)) {
					kept = append(kept, a)
				}
			}
			sd.DACL = kept
			details = append(details, attrRBCD+" -= "+pa.SAMAccountName)
		}
	}
	if len(details) == 0 {
		return segkcd.Change{What: op, Object: acct.DN, Action: segkcd.Unchanged}, nil
	}
	mod := ldap.NewModifyRequest(acct.DN, nil)
	action := segkcd.Modified
	if len(sd.DACL) == 0 && !add {
		mod.Replace(attrRBCD, []string{})
		action = segkcd.Removed
	} else {
		b, err := sd.Marshal()
		if err != nil {
			return segkcd.Change{}, wrap(op, acct.DN, err)
		}
		mod.Replace(attrRBCD, []string{string(b)})
		if !had {
			action = segkcd.Created
		}
	}
	if err := c.modifyRBCD(ctx, op, mod); err != nil {
		return segkcd.Change{}, err
	}
	return segkcd.Change{What: op, Object: acct.DN, Action: action, Details: details}, nil
}

// modifyRBCD writes msDS-AllowedToActOnBehalfOfOtherIdentity. The schema
// marks it systemOnly. Windows DCs let an account with write access to the
// target set it all the same (that is how Set-ADComputer
// -PrincipalsAllowedToDelegateToAccount and every RBCD tool work over
// LDAP). Samba (4.22) enforces systemOnly: constraintViolation, "can only
// be modified as system", and it refuses the relax control over LDAP
// ("critical non-registered control"); there only samba-tool delegation
// add-principal, run on the DC against its own database, writes it. That
// refusal is ErrSystemOnly, with that advice.
func (c *Conn) modifyRBCD(ctx context.Context, op string, mod *ldap.ModifyRequest) error {
	err := c.do(ctx, op, mod.DN, func(l *ldap.Conn) error { return l.Modify(mod) })
	var le *ldap.Error
	if errors.As(err, &le) && le.ResultCode == ldap.LDAPResultConstraintViolation &&
		strings.Contains(le.Error(), "modified as system") {
		return &Error{Op: op, Object: mod.DN, Kind: ErrSystemOnly, Err: err}
	}
	return err
}

// rbcd reads target and its RBCD descriptor (nil when unset).
func (c *Conn) rbcd(ctx context.Context, op, target string) (*Account, *SecurityDescriptor, error) {
	acct, err := c.FindAccount(ctx, target)
	if err != nil {
		return nil, nil, wrap(op, target, err)
	}
	if len(acct.rbcd) == 0 { // FindAccount reads the attribute
		return acct, nil, nil
	}
	sd, err := ParseSecurityDescriptor(acct.rbcd)
	if err != nil {
		return nil, nil, wrap(op, acct.DN, err)
	}
	return acct, sd, nil
}

// namesOf turns SIDs into sAMAccountNames, leaving a SID no account of
// this domain has as it is.
func (c *Conn) namesOf(ctx context.Context, op, object string, sids []string) ([]string, error) {
	if len(sids) == 0 {
		return nil, nil
	}
	out := make([]string, 0, len(sids))
	for _, sid := range sids {
		f, err := sidFilter(sid)
		if err != nil {
			out = append(out, sid)
			continue
		}
		ents, err := c.searchFor(ctx, op, object, ldap.NewSearchRequest(c.baseDN, ldap.ScopeWholeSubtree,
			ldap.NeverDerefAliases, 0, 0, false, f, []string{"sAMAccountName"}, nil))
		if err != nil {
			return nil, err
		}
		if len(ents) == 1 {
			out = append(out, ents[0].GetAttributeValue("sAMAccountName"))
		} else {
			out = append(out, sid)
		}
	}
	return out, nil
}
