package ad

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"

	"github.com/go-ldap/ldap/v3"
)

// DomainControllers lists the domain's DCs as the directory records them:
// the server objects of the Sites container that hold an NTDS Settings
// object, with the PDC emulator marked, ordered by site and name. The
// answer is the bound DC's view.
func (c *Conn) DomainControllers(ctx context.Context) ([]DomainController, error) {
	const op = "list domain controllers"
	sites := "CN=Sites," + c.info.ConfigurationNamingContext
	ntds, err := c.searchFor(ctx, op, sites, ldap.NewSearchRequest(sites, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=nTDSDSA)", []string{"msDS-isRODC"}, nil))
	if err != nil {
		return nil, err
	}
	pdc, err := c.PDCEmulator(ctx)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	var out []DomainController
	for _, e := range ntds {
		dn, err := ldap.ParseDN(e.DN)
		if err != nil || len(dn.RDNs) < 5 {
			continue
		}
		serverDN := strings.TrimPrefix(e.DN[strings.IndexByte(e.DN, ',')+1:], " ")
		srv, err := c.searchFor(ctx, op, serverDN, ldap.NewSearchRequest(serverDN, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
			0, 0, false, "(objectClass=server)", []string{"dNSHostName"}, nil))
		if err != nil {
			return nil, err
		}
		if len(srv) != 1 || srv[0].GetAttributeValue("dNSHostName") == "" {
			continue // a server object without a host name: not one to reach
		}
		out = append(out, DomainController{DNSHostName: srv[0].GetAttributeValue("dNSHostName"),
			Name: dn.RDNs[1].Attributes[0].Value, Site: dn.RDNs[3].Attributes[0].Value, DN: e.DN,
			PDC:      strings.EqualFold(e.DN, pdc.DN),
			ReadOnly: strings.EqualFold(e.GetAttributeValue("msDS-isRODC"), "TRUE")})
	}
	slices.SortFunc(out, func(a, b DomainController) int {
		if a.Site != b.Site {
			return strings.Compare(a.Site, b.Site)
		}
		return strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name))
	})
	return out, nil
}

// DialDC connects to the DC dc with this connection's Config (its bind,
// TLS and timeouts), whatever DC this one is bound to. It tries, in order,
// the URLs and Locator entries that name dc's host, then the other URLs,
// then dc's host name itself (resolved with Config.Resolver) on the scheme
// and port of this connection's URL; a connection counts only if the
// DC's rootDSE names dc's host, so an address list (URLs of IP addresses)
// serves as well as names. The error is a *DialError of every try.
func (c *Conn) DialDC(ctx context.Context, dc DomainController) (*Conn, error) {
	if dc.DNSHostName == "" {
		return nil, invalid("dial DC", dc.Name, "no host name")
	}
	cfg := c.orig
	all, _ := cfg.urls(ctx) // the Locator's failure leaves the URLs
	var named, rest []string
	for _, u := range all {
		if p, err := url.Parse(u); err == nil && strings.EqualFold(p.Hostname(), dc.DNSHostName) {
			named = append(named, u)
		} else {
			rest = append(rest, u)
		}
	}
	// Then the host name itself, last: a site that lists addresses may
	// have no DNS for the DCs' names here.
	if p, err := url.Parse(c.cfg.URL); err == nil {
		u := p.Scheme + "://" + dc.DNSHostName
		if p.Port() != "" {
			u = p.Scheme + "://" + net.JoinHostPort(dc.DNSHostName, p.Port())
		}
		if !slices.Contains(named, u) {
			rest = append(rest, u)
		}
	}
	var tried []DCFailure
	for i, u := range append(named, rest...) {
		n, err := dialOne(ctx, cfg, u)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			tried = append(tried, DCFailure{URL: u, Err: err})
			continue
		}
		if !strings.EqualFold(strings.TrimSuffix(n.info.DCHostName, "."), strings.TrimSuffix(dc.DNSHostName, ".")) {
			n.Close()
			if i < len(named) {
				tried = append(tried, DCFailure{URL: u, Err: fmt.Errorf("answered as %s", n.info.DCHostName)})
			}
			continue
		}
		n.orig = c.orig
		return n, nil
	}
	if len(tried) == 0 {
		tried = append(tried, DCFailure{URL: strings.Join(rest, ", "), Err: errors.New("none of these answered as " + dc.DNSHostName)})
	}
	return nil, &DialError{Tried: tried}
}

// DialPDC connects to the DC that holds the PDC emulator role: the one DC
// every writer of a value that must not fork agrees on (AD replicates
// multi-master, so a compare-and-swap is a lock only on one DC; Windows
// forwards password changes there too). The role is read on this
// connection's DC, or on another when this one no longer answers; every
// other DC that answers must agree, or the error says they disagree (a
// role seized while its old holder was down, which then came back, until
// replication settles it). When the holder cannot be reached the error
// matches ErrPDCUnavailable, and the caller waits: writing elsewhere is
// what the rule exists to prevent.
func (c *Conn) DialPDC(ctx context.Context) (*Conn, DomainController, error) {
	const op = "dial the PDC emulator"
	view := c
	dcs, err := c.DomainControllers(ctx)
	if err != nil && !errors.Is(err, ErrInsufficientRights) {
		// This DC no longer answers: ask another.
		other, derr := Dial(ctx, c.orig)
		if derr != nil {
			return nil, DomainController{}, &Error{Op: op, Kind: ErrPDCUnavailable, Err: errors.Join(err, derr)}
		}
		defer other.Close()
		view = other
		dcs, err = other.DomainControllers(ctx)
	}
	if err != nil {
		return nil, DomainController{}, err
	}
	i := slices.IndexFunc(dcs, func(d DomainController) bool { return d.PDC })
	if i < 0 {
		return nil, DomainController{}, &Error{Op: op, Kind: ErrNotFound, Err: errors.New("no DC holds the role in " + view.info.DCHostName + "'s view")}
	}
	pdc := dcs[i]
	n, err := view.DialDC(ctx, pdc)
	if err != nil {
		return nil, pdc, &Error{Op: op, Object: pdc.DNSHostName, Kind: ErrPDCUnavailable, Err: err}
	}
	// Every other DC that answers must name the same holder.
	for _, d := range dcs {
		if strings.EqualFold(d.DNSHostName, pdc.DNSHostName) || strings.EqualFold(d.DNSHostName, view.info.DCHostName) || d.ReadOnly {
			continue
		}
		o, err := view.DialDC(ctx, d)
		if err != nil {
			continue // down: it cannot write either
		}
		theirs, err := o.PDCEmulator(ctx)
		o.Close()
		if err == nil && !strings.EqualFold(theirs.DN, pdc.DN) {
			n.Close()
			return nil, pdc, &Error{Op: op, Object: pdc.DNSHostName, Kind: ErrPDCUnavailable,
				Err: fmt.Errorf("the DCs disagree on the PDC emulator: %s names %s, %s names %s (a role seized while its holder was down; replication settles it)",
					view.info.DCHostName, pdc.DNSHostName, d.DNSHostName, theirs.DNSHostName)}
		}
	}
	// And the holder must see itself so.
	if own, err := n.PDCEmulator(ctx); err != nil || !strings.EqualFold(own.DN, pdc.DN) {
		n.Close()
		if err == nil {
			err = fmt.Errorf("it names %s", own.DNSHostName)
		}
		return nil, pdc, &Error{Op: op, Object: pdc.DNSHostName, Kind: ErrPDCUnavailable, Err: err}
	}
	return n, pdc, nil
}
