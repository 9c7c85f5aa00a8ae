package ad

import (
	"context"
	"crypto/x509"

	"github.com/go-ldap/ldap/v3"
)

// NTAuthContainer is where the forest keeps the CAs that DCs accept
// certificate logons from, under the configuration naming context.
const NTAuthContainer = "CN=NTAuthCertificates,CN=Public Key Services,CN=Services"

// NTAuthCertificates reads the CA certificates of the forest's
// NTAuthCertificates object (its cACertificate values). Since 2025 Windows
// DCs accept a certificate logon only when the certificate's issuing CA is
// among them (CVE-2025-26647, KB5057784), so a gateway that maps device
// certificates to accounts should trust no other. A forest without the
// object (no enterprise CA was ever published) is an error matching
// ErrNotFound; values that are no certificate are skipped.
func (c *Conn) NTAuthCertificates(ctx context.Context) ([]*x509.Certificate, error) {
	const op = "read NTAuthCertificates"
	dn := NTAuthContainer + "," + c.info.ConfigurationNamingContext
	ents, err := c.search(ctx, op, ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 0, false,
		"(objectClass=*)", []string{"cACertificate"}, nil))
	if err != nil { // a missing object matches ErrNotFound
		return nil, err
	}
	if len(ents) != 1 {
		return nil, &Error{Op: op, Object: dn, Kind: ErrNotFound}
	}
	var out []*x509.Certificate
	for _, der := range ents[0].GetRawAttributeValues("cACertificate") {
		if c, err := x509.ParseCertificate(der); err == nil {
			out = append(out, c)
		}
	}
	return out, nil
}
