package ad

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/segkcd/segkcd/internal/sid"
)

// DomainInfo is what the rootDSE and the domain object say about the domain.
type DomainInfo struct {
	DefaultNamingContext       string // DC=corp,DC=example,DC=com
	ConfigurationNamingContext string
	SchemaNamingContext        string
	RootDomainNamingContext    string // the forest root
	DNSDomain                  string // corp.example.com, from the naming context
	Realm                      string // CORP.EXAMPLE.COM: the Kerberos realm
	NetBIOSName                string // CORP (empty if the bound account cannot read the Partitions container)
	DCHostName                 string // dnsHostName of the DC answering
	DomainSID                  string // S-1-5-21-...
	DomainFunctionality        int    // msDS-Behavior-Version of the domain (7 = 2016)
	ForestFunctionality        int
	SASLMechanisms             []string
	// SupportedControls are the LDAP control OIDs the DC announces.
	SupportedControls []string
}

func (c *Conn) readRootDSE(ctx context.Context) error {
	req := ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"defaultNamingContext", "configurationNamingContext",
			"schemaNamingContext", "rootDomainNamingContext", "dnsHostName",
			"domainFunctionality", "forestFunctionality", "supportedSASLMechanisms", "supportedControl"}, nil)
	ents, err := c.search(ctx, "read rootDSE", req)
	if err != nil {
		return err
	}
	if len(ents) != 1 {
		return &Error{Op: "read rootDSE", Kind: ErrNotFound}
	}
	e := ents[0]
	in := DomainInfo{
		DefaultNamingContext:       e.GetAttributeValue("defaultNamingContext"),
		ConfigurationNamingContext: e.GetAttributeValue("configurationNamingContext"),
		SchemaNamingContext:        e.GetAttributeValue("schemaNamingContext"),
		RootDomainNamingContext:    e.GetAttributeValue("rootDomainNamingContext"),
		DCHostName:                 e.GetAttributeValue("dnsHostName"),
		SASLMechanisms:             e.GetAttributeValues("supportedSASLMechanisms"),
		SupportedControls:          e.GetAttributeValues("supportedControl"),
	}
	in.DomainFunctionality, _ = strconv.Atoi(e.GetAttributeValue("domainFunctionality"))
	in.ForestFunctionality, _ = strconv.Atoi(e.GetAttributeValue("forestFunctionality"))
	in.DNSDomain = dnsFromDN(in.DefaultNamingContext)
	in.Realm = strings.ToUpper(in.DNSDomain)
	c.info = in
	c.baseDN = c.cfg.BaseDN
	if c.baseDN == "" {
		c.baseDN = in.DefaultNamingContext
	}
	if c.cfg.Bind == nil {
		return nil // anonymous: AD shows nothing below the rootDSE
	}
	// The domain SID and NetBIOS name need a bound connection.
	dom, err := c.search(ctx, "read domain", ldap.NewSearchRequest(in.DefaultNamingContext,
		ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)",
		[]string{"objectSid"}, nil))
	if err == nil && len(dom) == 1 {
		c.info.DomainSID, _ = DecodeSID(dom[0].GetRawAttributeValue("objectSid"))
	}
	if in.ConfigurationNamingContext != "" {
		parts, err := c.search(ctx, "read partitions", ldap.NewSearchRequest(
			"CN=Partitions,"+in.ConfigurationNamingContext, ldap.ScopeSingleLevel, ldap.NeverDerefAliases,
			0, 0, false, "(&(objectClass=crossRef)(nCName="+ldap.EscapeFilter(in.DefaultNamingContext)+"))",
			[]string{"nETBIOSName"}, nil))
		if err == nil && len(parts) == 1 {
			c.info.NetBIOSName = parts[0].GetAttributeValue("nETBIOSName")
		}
	}
	return nil
}

// dnsFromDN turns DC=corp,DC=example,DC=com into corp.example.com.
func dnsFromDN(dn string) string {
	parsed, err := ldap.ParseDN(dn)
	if err != nil {
		return ""
	}
	var labels []string
	for _, rdn := range parsed.RDNs {
		for _, a := range rdn.Attributes {
			if strings.EqualFold(a.Type, "DC") {
				labels = append(labels, strings.ToLower(a.Value))
			}
		}
	}
	return strings.Join(labels, ".")
}

// DecodeSID renders a binary objectSid as S-1-5-21-....
func DecodeSID(b []byte) (string, error) {
	if len(b) < 8 {
		return "", errors.New("ad: SID shorter than 8 bytes")
	}
	s, err := sid.Decode(b)
	if err != nil {
		return "", errors.New("ad: malformed SID")
	}
	return s, nil
}
