package ad

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// DomainControllers lists the domain's DCs as the directory records them:
// the server objects of the Sites container whose NTDS Settings object
// hosts this domain (the Sites container is forest-wide: other domains'
// DCs are left out), with the PDC emulator marked, ordered by site and
// name. The answer is the bound DC's view.
func (c *Conn) DomainControllers(ctx context.Context) ([]DomainController, error) {
	const op = "list domain controllers"
	sites := "CN=Sites," + c.info.ConfigurationNamingContext
	dom := ldap.EscapeFilter(c.info.DefaultNamingContext)
	ntds, err := c.searchFor(ctx, op, sites, ldap.NewSearchRequest(sites, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		0, 0, false, "(&(objectClass=nTDSDSA)(|(msDS-hasDomainNCs="+dom+")(hasMasterNCs="+dom+")))", []string{"msDS-isRODC"}, nil))
	if err != nil {
		return nil, err
	}
	owner, err := c.pdcOwner(ctx, op)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	var out []DomainController
	for _, e := range ntds {
		dc, ok, err := c.dcAt(ctx, op, e.DN)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue // no server object with a host name: not one to reach
		}
		dc.PDC = strings.EqualFold(e.DN, owner)
		dc.ReadOnly = strings.EqualFold(e.GetAttributeValue("msDS-isRODC"), "TRUE")
		out = append(out, dc)
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
// timeouts and trusted roots), whatever DC this one is bound to. It tries,
// in order, the URLs and Locator entries that name dc's host, then the
// other URLs, then dc's host name itself (resolved with Config.Resolver)
// on the default port of this connection's scheme. Whatever the URL, the
// DC must prove it is dc: TLS verifies its certificate under dc's host
// name (Config.TLSConfig's ServerName does not apply here, and a Kerberos
// bind asks for ldap/<dc's host>), so an address list (URLs of IP
// addresses) serves as well as names, and no other host that holds a
// certificate of its own is taken for dc, nor gets the bind. Its rootDSE
// must name dc too. The error is a *DialError of every try.
func (c *Conn) DialDC(ctx context.Context, dc DomainController) (*Conn, error) {
	host := strings.TrimSuffix(dc.DNSHostName, ".")
	if host == "" {
		return nil, invalid("dial DC", dc.Name, "no host name")
	}
	cfg := c.orig
	tc := tlsConfig(cfg.TLSConfig, host)
	tc.ServerName = host
	cfg.TLSConfig = tc
	all, _ := cfg.urls(ctx) // the Locator's failure leaves the URLs
	var named, rest []string
	for _, u := range all {
		if p, err := url.Parse(u); err == nil && sameHost(p.Hostname(), host) {
			named = append(named, u)
		} else {
			rest = append(rest, u)
		}
	}
	// Then the host name itself, last: a site that lists addresses may
	// have no DNS for the DCs' names here.
	if p, err := url.Parse(c.cfg.URL); err == nil {
		u := strings.ToLower(p.Scheme) + "://" + host
		if !slices.ContainsFunc(named, func(n string) bool { return sameURL(n, u) }) {
			rest = append(rest, u)
		}
	}
	var tried []DCFailure
	for _, u := range append(named, rest...) {
		n, err := dialOne(ctx, cfg, u)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			tried = append(tried, DCFailure{URL: u, Err: err})
			continue
		}
		if !sameHost(n.info.DCHostName, host) {
			n.Close()
			tried = append(tried, DCFailure{URL: u, Err: fmt.Errorf("its certificate names %s, its rootDSE %s", host, n.info.DCHostName)})
			continue
		}
		n.orig = c.orig
		return n, nil
	}
	return nil, &DialError{Tried: tried}
}

// sameURL reports whether two LDAP URLs name the same endpoint, a default
// port written out or not.
func sameURL(a, b string) bool {
	norm := func(s string) string {
		p, err := url.Parse(s)
		if err != nil {
			return s
		}
		scheme, port := strings.ToLower(p.Scheme), p.Port()
		if port == "" {
			port = map[string]string{"ldaps": "636", "ldap": "389"}[scheme]
		}
		return scheme + "://" + strings.ToLower(net.JoinHostPort(p.Hostname(), port))
	}
	return norm(a) == norm(b)
}

// dcBound bounds reaching one DC while surveying them all.
const dcBound = 15 * time.Second

// DialPDC connects to the DC that holds the PDC emulator role: the one DC
// every writer of a value that must not fork agrees on (AD replicates
// multi-master, so a compare-and-swap is a lock only on one DC; Windows
// forwards password changes there too).
//
// One view is not enough: a role seized while its holder was down, which
// then came back before replicating, makes each of the two name itself,
// and two writers who each reach only one of them would each find a
// holder. So DialPDC asks every writable DC of the domain (each within 15
// seconds): a majority of them must answer, all that answer must name the
// same holder, and the holder must answer and name itself. Two writers'
// majorities share a DC, whose one answer both followed. With two DCs
// both must answer: a DC that is gone for good must have its roles seized
// and its metadata removed (ntdsutil metadata cleanup, samba-tool domain
// demote --remove-other-dead-server), after which it no longer counts.
//
// When that fails, the error matches ErrPDCUnavailable (unless the holder
// refused the bind: that error is returned as it is), and the caller
// waits: writing elsewhere is what the rule exists to prevent. The list of
// DCs is read on this connection's DC, or on another when this one no
// longer answers.
func (c *Conn) DialPDC(ctx context.Context) (*Conn, DomainController, error) {
	const op = "dial the PDC emulator"
	unavailable := func(dc DomainController, err error) (*Conn, DomainController, error) {
		return nil, dc, &Error{Op: op, Object: dc.DNSHostName, Kind: ErrPDCUnavailable, Err: err}
	}
	view := c
	dcs, err := c.DomainControllers(ctx)
	if err != nil && !errors.Is(err, ErrInsufficientRights) {
		// This DC no longer answers: ask another.
		other, derr := Dial(ctx, c.orig)
		if derr != nil {
			return unavailable(DomainController{}, errors.Join(err, derr))
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
		return unavailable(DomainController{}, errors.New("no DC holds the role in "+view.info.DCHostName+"'s view"))
	}
	pdc := dcs[i]
	writable := 0
	for _, d := range dcs {
		if !d.ReadOnly {
			writable++
		}
	}
	// Every writable DC's view, the holder's connection kept.
	var holder *Conn
	answered := 0
	var down []string
	for _, d := range dcs {
		if d.ReadOnly {
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, dcBound)
		o, err := view.DialDC(dctx, d)
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return nil, pdc, ctx.Err()
			}
			if sameHost(d.DNSHostName, pdc.DNSHostName) {
				if holder != nil {
					holder.Close()
				}
				if errors.Is(err, ErrInvalidCredentials) || errors.Is(err, ErrInsufficientRights) {
					return nil, pdc, err
				}
				return unavailable(pdc, err)
			}
			down = append(down, d.DNSHostName)
			continue
		}
		theirs, err := o.pdcOwner(dctx, op)
		cancel()
		isHolder := sameHost(d.DNSHostName, pdc.DNSHostName)
		if !isHolder {
			o.Close()
		}
		if err == nil && !strings.EqualFold(theirs, pdc.DN) {
			err = fmt.Errorf("the DCs disagree on the PDC emulator: %s names %s, %s names %s (a role seized while its holder was down; replication settles it)",
				view.info.DCHostName, pdc.Name, d.DNSHostName, serverName(theirs))
		}
		if err != nil {
			if isHolder {
				o.Close()
			}
			if holder != nil {
				holder.Close()
			}
			return unavailable(pdc, err)
		}
		answered++
		if isHolder {
			holder = o
		}
	}
	if holder == nil {
		return unavailable(pdc, errors.New("the holder is not among the domain's writable DCs"))
	}
	if answered <= writable/2 {
		if holder != nil {
			holder.Close()
		}
		return unavailable(pdc, fmt.Errorf("only %d of the domain's %d writable DCs answered (%s did not): a majority must agree on the holder",
			answered, writable, strings.Join(down, ", ")))
	}
	return holder, pdc, nil
}

// serverName is the server (the DC's name) an NTDS Settings DN names, or
// the DN itself when it is not of that shape.
func serverName(ntds string) string {
	if dn, err := ldap.ParseDN(ntds); err == nil && len(dn.RDNs) >= 2 && len(dn.RDNs[1].Attributes) > 0 {
		return dn.RDNs[1].Attributes[0].Value
	}
	return ntds
}

// sameHost compares DNS host names as DNS does: ASCII letters without
// regard to case, a trailing dot ignored, and nothing else folded
// (strings.EqualFold would take the Kelvin sign for a k).
func sameHost(a, b string) bool {
	a, b = strings.TrimSuffix(a, "."), strings.TrimSuffix(b, ".")
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
