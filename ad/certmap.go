package ad

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// CertificateMappings reads what the directory keeps about the certificates
// of the account whose SID is s: its altSecurityIdentities values (explicit
// certificate mappings, KB5014754) and its whenCreated. seg.CertificateAuth
// takes the first as strong mappings for device certificates without a SID,
// and the second to refuse a certificate issued before its account was.
// The account is found by objectSid, never by a name. An unknown SID is an
// error matching ErrNotFound.
func (c *Conn) CertificateMappings(ctx context.Context, s string) ([]string, time.Time, error) {
	const op = "read certificate mappings"
	filter, err := sidFilter(s)
	if err != nil {
		return nil, time.Time{}, invalid(op, s, "not a SID")
	}
	ents, err := c.searchFor(ctx, op, s, ldap.NewSearchRequest(c.baseDN, ldap.ScopeWholeSubtree,
		ldap.NeverDerefAliases, 2, 0, false, filter, []string{"altSecurityIdentities", "whenCreated"}, nil))
	if err != nil {
		return nil, time.Time{}, err
	}
	if len(ents) != 1 {
		return nil, time.Time{}, &Error{Op: op, Object: s, Kind: ErrNotFound}
	}
	var created time.Time
	if v := ents[0].GetAttributeValue("whenCreated"); v != "" {
		if created, err = parseGeneralizedTime(v); err != nil {
			return nil, time.Time{}, &Error{Op: op, Object: s, Err: fmt.Errorf("whenCreated %q: %w", v, err)}
		}
	}
	return ents[0].GetAttributeValues("altSecurityIdentities"), created, nil
}

// sidFilter is an LDAP filter for the object whose objectSid is s, each
// byte of its binary form escaped (RFC 4515): nothing of s reaches the
// filter as text.
func sidFilter(s string) (string, error) {
	raw, err := EncodeSID(s)
	if err != nil {
		return "", err
	}
	var f strings.Builder
	f.WriteString("(objectSid=")
	for _, b := range raw {
		fmt.Fprintf(&f, "\\%02x", b)
	}
	f.WriteString(")")
	return f.String(), nil
}

// parseGeneralizedTime reads AD's GeneralizedTime ("20261206143000.0Z").
func parseGeneralizedTime(v string) (time.Time, error) {
	for _, layout := range []string{"20060102150405.0Z", "20060102150405Z", "20060102150405.0Z0700", "20060102150405Z0700"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("not a GeneralizedTime")
}
