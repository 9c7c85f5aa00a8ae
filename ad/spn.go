package ad

import (
	"context"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/segkcd/segkcd"
)

// ParseSPN splits "class/host[:port][/name]" into its service class and the
// rest. It refuses empty parts and whitespace.
func ParseSPN(spn string) (class, rest string, err error) {
	class, rest, ok := strings.Cut(spn, "/")
	if !ok || class == "" || rest == "" || strings.HasPrefix(rest, "/") || strings.HasSuffix(rest, "/") ||
		strings.ContainsAny(spn, " \t\r\n") {
		return "", "", invalid("parse SPN", spn, "want service-class/host[:port][/service-name]")
	}
	return class, rest, nil
}

// ListSPNs lists an account's servicePrincipalName values, like setspn -L.
func (c *Conn) ListSPNs(ctx context.Context, account string) ([]string, error) {
	acct, err := c.FindAccount(ctx, account)
	if err != nil {
		return nil, err
	}
	return acct.SPNs, nil
}

// SetSPN registers an SPN on an account with setspn -S semantics: it first
// searches the whole forest (global catalog), case-insensitively, for the
// SPN and, when its service class is an alias of HOST in the forest's
// sPNMappings (http is), for HOST/ with the same rest; if another account
// holds either, it returns a *DuplicateSPNError naming it and changes
// nothing. An SPN already on the same account is reported segkcd.Unchanged.
func (c *Conn) SetSPN(ctx context.Context, account, spn string) (segkcd.Change, error) {
	const op = "add SPN"
	class, rest, err := ParseSPN(spn)
	if err != nil {
		return segkcd.Change{}, err
	}
	acct, err := c.FindAccount(ctx, account)
	if err != nil {
		return segkcd.Change{}, err
	}
	if have, ok := findFold(acct.SPNs, spn); ok {
		return segkcd.Change{What: op, Action: segkcd.Unchanged, Object: acct.DN, Details: []string{"servicePrincipalName " + have}}, nil
	}
	candidates := []string{spn}
	if !strings.EqualFold(class, "host") {
		aliasOf, err := c.hostAliases(ctx)
		if err != nil {
			return segkcd.Change{}, err
		}
		if aliasOf[strings.ToLower(class)] == "host" {
			candidates = append(candidates, "HOST/"+rest)
		}
	}
	if err := c.checkDuplicateSPN(ctx, op, spn, acct.DN, candidates); err != nil {
		return segkcd.Change{}, err
	}
	mod := ldap.NewModifyRequest(acct.DN, nil)
	mod.Add("servicePrincipalName", []string{spn})
	if err := c.do(ctx, op, acct.DN, func(l *ldap.Conn) error { return l.Modify(mod) }); err != nil {
		return segkcd.Change{}, err
	}
	return segkcd.Change{What: op, Action: segkcd.Modified, Object: acct.DN, Details: []string{"servicePrincipalName += " + spn}}, nil
}

// checkDuplicateSPN searches the forest for any of the candidate SPNs on an
// account other than self.
func (c *Conn) checkDuplicateSPN(ctx context.Context, op, spn, self string, candidates []string) error {
	gc, err := c.globalCatalog(ctx)
	if err != nil {
		return err
	}
	var f strings.Builder
	f.WriteString("(|")
	for _, s := range candidates {
		f.WriteString("(servicePrincipalName=" + ldap.EscapeFilter(s) + ")")
	}
	f.WriteString(")")
	req := ldap.NewSearchRequest("", ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		f.String(), []string{"servicePrincipalName"}, nil)
	var res *ldap.SearchResult
	err = wrap("search the global catalog for "+spn, "", await(ctx, func() error {
		var err error
		res, err = gc.SearchWithPaging(req, 500)
		return err
	}))
	if err != nil {
		return err
	}
	dup := &DuplicateSPNError{SPN: spn}
	for _, e := range res.Entries {
		if strings.EqualFold(e.DN, self) {
			continue
		}
		for _, have := range e.GetAttributeValues("servicePrincipalName") {
			for _, want := range candidates {
				if strings.EqualFold(have, want) {
					if dup.Match == "" || strings.EqualFold(have, spn) {
						dup.Match = have
					}
				}
			}
		}
		dup.Holders = append(dup.Holders, e.DN)
	}
	if len(dup.Holders) == 0 {
		return nil
	}
	return &Error{Op: op, Object: self, Kind: ErrDuplicateSPN, Err: dup}
}

// hostAliases reads sPNMappings from the forest's Directory Service object
// once: "host=alerter,http,..." means an SPN of those classes is served by
// the account holding HOST/ when none holds it explicitly.
func (c *Conn) hostAliases(ctx context.Context) (map[string]string, error) {
	c.mu.Lock()
	m := c.spnMappings
	c.mu.Unlock()
	if m != nil {
		return m, nil
	}
	dn := "CN=Directory Service,CN=Windows NT,CN=Services," + c.info.ConfigurationNamingContext
	ents, err := c.search(ctx, "read sPNMappings", ldap.NewSearchRequest(dn, ldap.ScopeBaseObject,
		ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", []string{"sPNMappings"}, nil))
	if err != nil {
		return nil, err
	}
	m = map[string]string{}
	if len(ents) == 1 {
		m = parseSPNMappings(ents[0].GetAttributeValues("sPNMappings"))
	}
	c.mu.Lock()
	c.spnMappings = m
	c.mu.Unlock()
	return m, nil
}

// parseSPNMappings turns ["host=alerter,http"] into {"alerter":"host","http":"host"}.
func parseSPNMappings(values []string) map[string]string {
	m := map[string]string{}
	for _, v := range values {
		target, list, ok := strings.Cut(v, "=")
		if !ok {
			continue
		}
		target = strings.ToLower(strings.TrimSpace(target))
		for _, a := range strings.Split(list, ",") {
			if a = strings.ToLower(strings.TrimSpace(a)); a != "" {
				m[a] = target
			}
		}
	}
	return m
}

// RemoveSPN removes an SPN from an account (matched case-insensitively).
// An SPN the account does not hold is reported segkcd.Unchanged.
func (c *Conn) RemoveSPN(ctx context.Context, account, spn string) (segkcd.Change, error) {
	const op = "remove SPN"
	if _, _, err := ParseSPN(spn); err != nil {
		return segkcd.Change{}, err
	}
	acct, err := c.FindAccount(ctx, account)
	if err != nil {
		return segkcd.Change{}, err
	}
	have, ok := findFold(acct.SPNs, spn)
	if !ok {
		return segkcd.Change{What: op, Action: segkcd.Unchanged, Object: acct.DN}, nil
	}
	// Delete the value as stored: the DC matches it exactly.
	mod := ldap.NewModifyRequest(acct.DN, nil)
	mod.Delete("servicePrincipalName", []string{have})
	if err := c.do(ctx, op, acct.DN, func(l *ldap.Conn) error { return l.Modify(mod) }); err != nil {
		return segkcd.Change{}, err
	}
	return segkcd.Change{What: op, Action: segkcd.Modified, Object: acct.DN, Details: []string{"servicePrincipalName -= " + have}}, nil
}
