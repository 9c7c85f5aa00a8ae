package ad

import (
	"context"
	"fmt"
	"strings"

	"github.com/go-ldap/ldap/v3"
)

// DomainController is a DC as the directory describes it.
type DomainController struct {
	// DNSHostName is its host name (the server object's dNSHostName).
	DNSHostName string
	// Name is its server object's name (the DC's NetBIOS name).
	Name string
	// Site is the AD site its server object is in.
	Site string
	// DN is its NTDS Settings object (what fSMORoleOwner names).
	DN string
	// PDC is whether it holds the PDC emulator role, and ReadOnly whether
	// it is a read-only DC, as the DC that was asked sees them
	// (DomainControllers; PDCEmulator leaves both false).
	PDC, ReadOnly bool
}

// PDCEmulator reads, on the DC this connection is bound to, which DC holds
// the domain's PDC emulator role: the fSMORoleOwner of the domain object
// names that DC's NTDS Settings object, whose parent server object carries
// its host name, and whose Sites container entry its site. Windows forwards
// password changes to it; a roll that must not fork the ASA's password
// writes there (issue 28). The answer is this DC's view: a role seized on
// another DC reaches it by replication.
func (c *Conn) PDCEmulator(ctx context.Context) (DomainController, error) {
	const op = "read PDC emulator"
	owner, err := c.pdcOwner(ctx, op)
	if err != nil {
		return DomainController{}, err
	}
	dc, ok, err := c.dcAt(ctx, op, owner)
	if err != nil {
		return DomainController{}, err
	}
	if !ok {
		return DomainController{}, &Error{Op: op, Object: owner, Kind: ErrNotFound, Err: fmt.Errorf("the PDC emulator's server object has no dNSHostName")}
	}
	return dc, nil
}

// pdcOwner is the domain object's fSMORoleOwner: the DN of the NTDS
// Settings object of the DC that holds the PDC emulator role, in this DC's
// view.
func (c *Conn) pdcOwner(ctx context.Context, op string) (string, error) {
	dom := c.info.DefaultNamingContext
	ents, err := c.searchFor(ctx, op, dom, ldap.NewSearchRequest(dom, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=*)", []string{"fSMORoleOwner"}, nil))
	if err != nil {
		return "", err
	}
	owner := ""
	if len(ents) == 1 {
		owner = ents[0].GetAttributeValue("fSMORoleOwner")
	}
	if dn, err := ldap.ParseDN(owner); err != nil || len(dn.RDNs) < 5 {
		return "", &Error{Op: op, Object: dom, Kind: ErrNotFound,
			Err: fmt.Errorf("the domain object's fSMORoleOwner %q does not name an NTDS Settings object", owner)}
	}
	return owner, nil
}

// dcAt is the DC whose NTDS Settings object is ntds
// (CN=NTDS Settings,CN=<server>,CN=Servers,CN=<site>,CN=Sites,...): its
// name and site from the DN, its host name from the parent server object.
// ok is false when the DN is not of that shape or the server object has
// no dNSHostName (not a DC one can reach).
func (c *Conn) dcAt(ctx context.Context, op, ntds string) (dc DomainController, ok bool, err error) {
	dn, err := ldap.ParseDN(ntds)
	if err != nil || len(dn.RDNs) < 5 {
		return DomainController{}, false, nil
	}
	serverDN := strings.TrimPrefix(ntds[strings.IndexByte(ntds, ',')+1:], " ")
	srv, err := c.searchFor(ctx, op, serverDN, ldap.NewSearchRequest(serverDN, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=server)", []string{"dNSHostName"}, nil))
	if err != nil {
		return DomainController{}, false, err
	}
	if len(srv) != 1 || srv[0].GetAttributeValue("dNSHostName") == "" {
		return DomainController{}, false, nil
	}
	return DomainController{DN: ntds, DNSHostName: srv[0].GetAttributeValue("dNSHostName"),
		Name: dn.RDNs[1].Attributes[0].Value, Site: dn.RDNs[3].Attributes[0].Value}, true, nil
}
