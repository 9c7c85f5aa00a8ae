package ad

import (
	"context"
	"fmt"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/segkcd/segkcd"
)

// Delegation is an account's delegation settings, like samba-tool
// delegation show.
type Delegation struct {
	DN             string
	SAMAccountName string
	// Unconstrained: TRUSTED_FOR_DELEGATION, the account may impersonate
	// anyone to any service. Domain controllers have it by design.
	Unconstrained bool
	// ProtocolTransition: TRUSTED_TO_AUTH_FOR_DELEGATION, S4U2Self gives
	// forwardable evidence, so S4U2Proxy works without the user's own ticket.
	ProtocolTransition bool
	// AllowedToDelegateTo: msDS-AllowedToDelegateTo, the SPNs of constrained delegation.
	AllowedToDelegateTo []string
	// ResourceBased: msDS-AllowedToActOnBehalfOfOtherIdentity is set on
	// this account, and AllowedToActOnBehalf names the accounts it lets
	// delegate to this one (sAMAccountNames; SIDs of no account here).
	ResourceBased        bool
	AllowedToActOnBehalf []string
	// NotDelegated: NOT_DELEGATED ("sensitive and cannot be delegated").
	NotDelegated bool
	Disabled     bool
	Computer     bool
}

// Kind names the strongest delegation: "unconstrained", "constrained with
// protocol transition", "constrained", "resource-based" or "none".
func (d Delegation) Kind() string {
	switch {
	case d.Unconstrained:
		return "unconstrained"
	case len(d.AllowedToDelegateTo) > 0 && d.ProtocolTransition:
		return "constrained with protocol transition"
	case len(d.AllowedToDelegateTo) > 0:
		return "constrained"
	case d.ProtocolTransition:
		return "protocol transition without targets"
	case d.ResourceBased:
		return "resource-based"
	}
	return "none"
}

func delegationFrom(a *Account) Delegation {
	return Delegation{
		DN:                  a.DN,
		SAMAccountName:      a.SAMAccountName,
		Unconstrained:       a.UserAccountControl.Has(UACTrustedForDelegation),
		ProtocolTransition:  a.UserAccountControl.Has(UACTrustedToAuthForDelegation),
		AllowedToDelegateTo: a.AllowedToDelegateTo,
		ResourceBased:       a.ResourceBasedDelegation,
		NotDelegated:        a.UserAccountControl.Has(UACNotDelegated),
		Disabled:            a.UserAccountControl.Has(UACAccountDisable),
		Computer:            a.IsComputer(),
	}
}

// DelegationInfo reads an account's delegation settings.
func (c *Conn) DelegationInfo(ctx context.Context, account string) (Delegation, error) {
	acct, err := c.FindAccount(ctx, account)
	if err != nil {
		return Delegation{}, err
	}
	d := delegationFrom(acct)
	if d.AllowedToActOnBehalf, err = c.namesOf(ctx, "delegation info", acct.DN, acct.ResourceDelegationSIDs); err != nil {
		return Delegation{}, err
	}
	return d, nil
}

// AuditDelegation lists every account under the base DN with any kind of
// delegation (unconstrained, constrained, protocol transition,
// resource-based), like impacket's findDelegation. Disabled accounts are
// included and marked.
func (c *Conn) AuditDelegation(ctx context.Context) ([]Delegation, error) {
	filter := fmt.Sprintf("(|(userAccountControl:1.2.840.113556.1.4.803:=%d)(userAccountControl:1.2.840.113556.1.4.803:=%d)"+
		"(msDS-AllowedToDelegateTo=*)(msDS-AllowedToActOnBehalfOfOtherIdentity=*))",
		UACTrustedForDelegation, UACTrustedToAuthForDelegation)
	ents, err := c.search(ctx, "audit delegation", ldap.NewSearchRequest(c.baseDN, ldap.ScopeWholeSubtree,
		ldap.NeverDerefAliases, 0, 0, false, filter, accountAttrs, nil))
	if err != nil {
		return nil, err
	}
	out := make([]Delegation, 0, len(ents))
	for _, e := range ents {
		a := accountFrom(e)
		d := delegationFrom(a)
		if d.AllowedToActOnBehalf, err = c.namesOf(ctx, "audit delegation", a.DN, a.ResourceDelegationSIDs); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// SetProtocolTransition turns TRUSTED_TO_AUTH_FOR_DELEGATION on or off. It
// never touches TRUSTED_FOR_DELEGATION (unconstrained delegation).
func (c *Conn) SetProtocolTransition(ctx context.Context, account string, on bool) (segkcd.Change, error) {
	if on {
		return c.SetAccountFlags(ctx, account, UACTrustedToAuthForDelegation, 0)
	}
	return c.SetAccountFlags(ctx, account, 0, UACTrustedToAuthForDelegation)
}

// AddAllowedToDelegateTo adds SPNs to msDS-AllowedToDelegateTo (constrained
// delegation targets). SPNs already there (case-insensitively) are skipped.
// Writing this attribute needs SeEnableDelegationPrivilege (Domain Admins).
// ADUC writes both HTTP/host.fqdn and HTTP/host; pass both if clients use both.
func (c *Conn) AddAllowedToDelegateTo(ctx context.Context, account string, spns ...string) (segkcd.Change, error) {
	return c.editDelegateTo(ctx, "add delegation targets", account, spns, nil, false)
}

// RemoveAllowedToDelegateTo removes SPNs from msDS-AllowedToDelegateTo.
// SPNs not there are skipped.
func (c *Conn) RemoveAllowedToDelegateTo(ctx context.Context, account string, spns ...string) (segkcd.Change, error) {
	return c.editDelegateTo(ctx, "remove delegation targets", account, nil, spns, false)
}

// SetAllowedToDelegateTo makes msDS-AllowedToDelegateTo exactly spns
// (compared case-insensitively); an empty list clears it.
func (c *Conn) SetAllowedToDelegateTo(ctx context.Context, account string, spns []string) (segkcd.Change, error) {
	return c.editDelegateTo(ctx, "set delegation targets", account, spns, nil, true)
}

// editDelegateTo adds and removes values; with exact, values not in add are removed.
func (c *Conn) editDelegateTo(ctx context.Context, op, account string, add, remove []string, exact bool) (segkcd.Change, error) {
	for _, s := range append(append([]string{}, add...), remove...) {
		if _, _, err := ParseSPN(s); err != nil {
			return segkcd.Change{}, err
		}
	}
	acct, err := c.FindAccount(ctx, account)
	if err != nil {
		return segkcd.Change{}, err
	}
	have := acct.AllowedToDelegateTo
	var toAdd, toDel []string
	for _, s := range add {
		if !containsFold(have, s) && !containsFold(toAdd, s) {
			toAdd = append(toAdd, s)
		}
	}
	for _, h := range have {
		if (exact && !containsFold(add, h)) || containsFold(remove, h) {
			toDel = append(toDel, h)
		}
	}
	mod := ldap.NewModifyRequest(acct.DN, nil)
	var details []string
	if len(toDel) > 0 {
		mod.Delete("msDS-AllowedToDelegateTo", toDel)
		details = append(details, "msDS-AllowedToDelegateTo -= "+strings.Join(toDel, ", "))
	}
	if len(toAdd) > 0 {
		mod.Add("msDS-AllowedToDelegateTo", toAdd)
		details = append(details, "msDS-AllowedToDelegateTo += "+strings.Join(toAdd, ", "))
	}
	return c.apply(ctx, op, mod, details)
}

// findFold finds s in list case-insensitively (SPNs compare that way) and
// returns the value as stored.
func findFold(list []string, s string) (string, bool) {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return v, true
		}
	}
	return "", false
}

func containsFold(list []string, s string) bool {
	_, ok := findFold(list, s)
	return ok
}
