package ad

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/segkcd/segkcd"
	"github.com/segkcd/segkcd/internal/redact"
)

// Account is a user, computer or group as segkcd sees it.
type Account struct {
	DN                       string
	SAMAccountName           string // computers end in $
	UserPrincipalName        string
	DNSHostName              string
	Mail                     string
	SID                      string
	ObjectClass              []string
	UserAccountControl       UAC
	SupportedEncryptionTypes EncType
	SPNs                     []string
	AllowedToDelegateTo      []string
	// ResourceBasedDelegation: msDS-AllowedToActOnBehalfOfOtherIdentity is set
	// (some account may delegate to this one by RBCD).
	ResourceBasedDelegation bool
	// ResourceDelegationSIDs are the SIDs that descriptor allows (nil when
	// it does not parse; ResourceDelegation resolves them to names).
	ResourceDelegationSIDs []string
	rbcd                   []byte // the descriptor as read, for the RBCD edits
	PrimaryGroupID         int
	MemberOf               []string
	PasswordLastSet        int64 // pwdLastSet (100 ns intervals since 1601; 0 = must change)
	KeyVersion             int   // msDS-KeyVersionNumber: the kvno of the account's current keys
}

// IsComputer reports whether the account is a computer.
func (a *Account) IsComputer() bool { return a.hasClass("computer") }

// IsGroup reports whether the object is a group.
func (a *Account) IsGroup() bool { return a.hasClass("group") }

func (a *Account) hasClass(c string) bool {
	for _, oc := range a.ObjectClass {
		if strings.EqualFold(oc, c) {
			return true
		}
	}
	return false
}

var accountAttrs = []string{"objectClass", "sAMAccountName", "userPrincipalName", "dNSHostName",
	"mail", "objectSid", "userAccountControl", "msDS-SupportedEncryptionTypes",
	"servicePrincipalName", "msDS-AllowedToDelegateTo", "msDS-AllowedToActOnBehalfOfOtherIdentity",
	"primaryGroupID", "memberOf", "pwdLastSet", "msDS-KeyVersionNumber"}

func accountFrom(e *ldap.Entry) *Account {
	a := &Account{
		DN:                      e.DN,
		SAMAccountName:          e.GetAttributeValue("sAMAccountName"),
		UserPrincipalName:       e.GetAttributeValue("userPrincipalName"),
		DNSHostName:             e.GetAttributeValue("dNSHostName"),
		Mail:                    e.GetAttributeValue("mail"),
		ObjectClass:             e.GetAttributeValues("objectClass"),
		SPNs:                    e.GetAttributeValues("servicePrincipalName"),
		AllowedToDelegateTo:     e.GetAttributeValues("msDS-AllowedToDelegateTo"),
		MemberOf:                e.GetAttributeValues("memberOf"),
		ResourceBasedDelegation: len(e.GetRawAttributeValue("msDS-AllowedToActOnBehalfOfOtherIdentity")) > 0,
	}
	a.SID, _ = DecodeSID(e.GetRawAttributeValue("objectSid"))
	if raw := e.GetRawAttributeValue(attrRBCD); len(raw) > 0 {
		a.rbcd = raw
		if sd, err := ParseSecurityDescriptor(raw); err == nil {
			a.ResourceDelegationSIDs = sd.allowedSIDs()
		}
	}
	uac, _ := strconv.ParseInt(e.GetAttributeValue("userAccountControl"), 10, 64)
	a.UserAccountControl = UAC(uac)
	enc, _ := strconv.ParseInt(e.GetAttributeValue("msDS-SupportedEncryptionTypes"), 10, 64)
	a.SupportedEncryptionTypes = EncType(enc)
	a.PrimaryGroupID, _ = strconv.Atoi(e.GetAttributeValue("primaryGroupID"))
	a.PasswordLastSet, _ = strconv.ParseInt(e.GetAttributeValue("pwdLastSet"), 10, 64)
	a.KeyVersion, _ = strconv.Atoi(e.GetAttributeValue("msDS-KeyVersionNumber"))
	return a
}

// isDN tells a distinguished name from an account name: it must parse, and
// every attribute type must be a descriptor or an OID, so that text such
// as "alice)(cn=*" is taken for a (non-existent) account name.
func isDN(name string) bool {
	if !strings.Contains(name, "=") {
		return false
	}
	dn, err := ldap.ParseDN(name)
	if err != nil || len(dn.RDNs) == 0 {
		return false
	}
	for _, rdn := range dn.RDNs {
		for _, a := range rdn.Attributes {
			if !isAttrType(a.Type) {
				return false
			}
		}
	}
	return true
}

// isAttrType reports whether s is an attribute descriptor (RFC 4512 keystring) or a numeric OID.
func isAttrType(s string) bool {
	if s == "" {
		return false
	}
	if '0' <= s[0] && s[0] <= '9' {
		for _, r := range s {
			if r != '.' && (r < '0' || r > '9') {
				return false
			}
		}
		return true
	}
	for i, r := range s {
		letter := 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'
		if !letter && (i == 0 || r != '-' && (r < '0' || r > '9')) {
			return false
		}
	}
	return true
}

// FindAccount finds a user, computer or group by sAMAccountName (a
// computer's with or without the trailing $), `DOMAIN\name`, user principal
// name (an account without one also answers to name@dnsdomain) or DN.
func (c *Conn) FindAccount(ctx context.Context, name string) (*Account, error) {
	const op = "find account"
	name = strings.TrimSpace(name)
	if name == "" {
		return nil, invalid(op, "", "empty account name")
	}
	if isDN(name) {
		ents, err := c.search(ctx, op, ldap.NewSearchRequest(name, ldap.ScopeBaseObject,
			ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", accountAttrs, nil))
		if err != nil {
			return nil, err
		}
		if len(ents) == 0 {
			return nil, &Error{Op: op, Object: name, Kind: ErrNotFound}
		}
		return accountFrom(ents[0]), nil
	}
	var filter string
	sam := name
	if dom, user, ok := strings.Cut(name, `\`); ok {
		if c.info.NetBIOSName != "" && !strings.EqualFold(dom, c.info.NetBIOSName) &&
			!strings.EqualFold(dom, c.info.DNSDomain) {
			return nil, &Error{Op: op, Object: name, Kind: ErrNotFound,
				Err: fmt.Errorf("domain %q is not this domain (%s)", dom, c.info.NetBIOSName)}
		}
		sam = user
	} else if user, suffix, ok := strings.Cut(name, "@"); ok {
		upn := "(userPrincipalName=" + ldap.EscapeFilter(name) + ")"
		if strings.EqualFold(suffix, c.info.DNSDomain) {
			// The implicit UPN: sAMAccountName@dnsdomain.
			filter = "(|" + upn + samFilter(user) + ")"
		} else {
			filter = upn
		}
	}
	if filter == "" {
		filter = samFilter(sam)
	}
	ents, err := c.searchFor(ctx, op, name, ldap.NewSearchRequest(c.baseDN, ldap.ScopeWholeSubtree,
		ldap.NeverDerefAliases, 0, 0, false, filter, accountAttrs, nil))
	if err != nil {
		return nil, err
	}
	switch len(ents) {
	case 0:
		return nil, &Error{Op: op, Object: name, Kind: ErrNotFound}
	case 1:
		return accountFrom(ents[0]), nil
	}
	// "exchasa" may name both a user exchasa and a computer exchasa$; an exact match wins.
	var exact []*ldap.Entry
	for _, e := range ents {
		if strings.EqualFold(e.GetAttributeValue("sAMAccountName"), sam) ||
			strings.EqualFold(e.GetAttributeValue("userPrincipalName"), name) {
			exact = append(exact, e)
		}
	}
	if len(exact) == 1 {
		return accountFrom(exact[0]), nil
	}
	return nil, &Error{Op: op, Object: name, Kind: ErrAmbiguous}
}

// findSAM finds the object with exactly this sAMAccountName.
func (c *Conn) findSAM(ctx context.Context, op, sam string) (*Account, error) {
	ents, err := c.searchFor(ctx, op, sam, ldap.NewSearchRequest(c.baseDN, ldap.ScopeWholeSubtree,
		ldap.NeverDerefAliases, 0, 0, false, "(sAMAccountName="+ldap.EscapeFilter(sam)+")", accountAttrs, nil))
	if err != nil {
		return nil, err
	}
	if len(ents) == 0 {
		return nil, &Error{Op: op, Object: sam, Kind: ErrNotFound}
	}
	return accountFrom(ents[0]), nil
}

// samFilter matches a sAMAccountName, and for a name without $ also name$.
func samFilter(sam string) string {
	f := "(sAMAccountName=" + ldap.EscapeFilter(sam) + ")"
	if !strings.HasSuffix(sam, "$") {
		f = "(|" + f + "(sAMAccountName=" + ldap.EscapeFilter(sam+"$") + "))"
	}
	return f
}

// ComputerAccountRequest describes a computer account such as the Exchange
// Alternate Service Account (ASA).
type ComputerAccountRequest struct {
	// Name is the computer name without $, at most 15 characters (e.g. EXCHASA).
	Name string
	// Container is the DN of the OU to create it in; empty means CN=Computers.
	Container string
	// DNSHostName defaults to lower(Name).<dns domain>. It also sets the
	// Kerberos salt of the account's AES keys.
	DNSHostName string
	// Password is the initial password. Empty means a random 120-character
	// one that nobody knows: the account has keys at once (a keyless account
	// makes the KDC answer KDC_ERR_ETYPE_NOSUPP), and never the guessable
	// default ADUC gives. The Exchange ASA roll replaces it. Used only when
	// the account is created.
	Password string
	// EncryptionTypes is msDS-SupportedEncryptionTypes; zero means EncAES (24),
	// so tickets for the account are AES, never RC4.
	EncryptionTypes EncType
	Description     string
}

// CreateComputerAccount creates a computer account, member of Domain
// Computers only (its primary group). If the account exists, its DNS host
// name and encryption types are brought in line and the change is reported;
// its password and location are left alone.
func (c *Conn) CreateComputerAccount(ctx context.Context, req ComputerAccountRequest) (segkcd.Change, error) {
	const op = "create computer account"
	name := strings.TrimSuffix(strings.TrimSpace(req.Name), "$")
	if err := checkName(op, name, 15); err != nil {
		return segkcd.Change{}, err
	}
	sam := name + "$"
	host := req.DNSHostName
	if host == "" {
		host = strings.ToLower(name) + "." + c.info.DNSDomain
	}
	enc := req.EncryptionTypes
	if enc == 0 {
		enc = EncAES
	}
	return c.ensureAccount(ctx, op, sam, func(acct *Account) error {
		if !acct.IsComputer() {
			return fmt.Errorf("%s is not a computer account", acct.SAMAccountName)
		}
		return nil
	}, func(acct *Account, ch *changes) {
		if !strings.EqualFold(acct.DNSHostName, host) {
			ch.replace("dNSHostName", host, fmt.Sprintf("%q -> %q", acct.DNSHostName, host))
		}
		if acct.SupportedEncryptionTypes != enc {
			ch.replace("msDS-SupportedEncryptionTypes", strconv.FormatUint(uint64(enc), 10),
				fmt.Sprintf("%v -> %v", acct.SupportedEncryptionTypes, enc))
		}
	}, func() (segkcd.Change, error) { return c.addComputerAccount(ctx, op, req, name, sam, host, enc) })
}

// addComputerAccount creates the computer account CreateComputerAccount
// did not find.
func (c *Conn) addComputerAccount(ctx context.Context, op string, req ComputerAccountRequest, name, sam, host string, enc EncType) (segkcd.Change, error) {
	container := req.Container
	if container == "" {
		container = "CN=Computers," + c.info.DefaultNamingContext
	}
	dn := "CN=" + ldap.EscapeDN(name) + "," + container
	if err := c.requireTLS(op, dn); err != nil {
		return segkcd.Change{}, err
	}
	pw := req.Password
	if pw == "" {
		var err error
		if pw, err = GeneratePassword(120); err != nil {
			return segkcd.Change{}, wrap(op, dn, err)
		}
	}
	encoded, err := encodePassword(pw)
	if err != nil {
		return segkcd.Change{}, wrap(op, dn, err)
	}
	add := ldap.NewAddRequest(dn, nil)
	add.Attribute("objectClass", []string{"top", "person", "organizationalPerson", "user", "computer"})
	add.Attribute("cn", []string{name})
	add.Attribute("sAMAccountName", []string{sam})
	add.Attribute("userAccountControl", []string{strconv.Itoa(int(UACWorkstationTrustAccount))})
	add.Attribute("dNSHostName", []string{host})
	add.Attribute("msDS-SupportedEncryptionTypes", []string{strconv.FormatUint(uint64(enc), 10)})
	add.Attribute("unicodePwd", []string{encoded})
	if req.Description != "" {
		add.Attribute("description", []string{req.Description})
	}
	if err := c.do(ctx, op, dn, func(l *ldap.Conn) error { return l.Add(add) }); err != nil {
		return segkcd.Change{}, err
	}
	return segkcd.Change{What: op, Action: segkcd.Created, Object: dn, Details: []string{
		"sAMAccountName=" + sam, "dNSHostName=" + host, "msDS-SupportedEncryptionTypes=" + enc.String()}}, nil
}

// ServiceAccountRequest describes a user account that runs a service, such
// as the gateway's delegating account (svc_awseg). It serves for any user
// account: the test lab seeds its users with it.
type ServiceAccountRequest struct {
	// Name is the sAMAccountName, at most 20 characters.
	Name string
	// Container is the DN of the OU; empty means CN=Users.
	Container string
	// UserPrincipalName defaults to Name@<dns domain>.
	UserPrincipalName string
	// Password is required when the account is created, and ignored after.
	Password string
	// EncryptionTypes is msDS-SupportedEncryptionTypes; zero means EncAES
	// (24). Without it AD issues RC4 tickets to the account's SPNs, which
	// any domain user can request and crack offline (Kerberoasting); the
	// gateway's service account opens every mailbox it delegates to. Set on
	// creation and brought in line on an existing account.
	EncryptionTypes EncType
	// PasswordNeverExpires sets DONT_EXPIRE_PASSWORD (on creation and on an
	// existing account; false never clears it).
	PasswordNeverExpires bool
	Mail                 string
	DisplayName          string
	Description          string
}

// Format prints the request without its password, for every verb.
func (r ServiceAccountRequest) Format(f fmt.State, verb rune) {
	type plain ServiceAccountRequest
	m := plain(r)
	m.Password = redact.String(m.Password)
	redact.Format(f, verb, "ad.ServiceAccountRequest", m)
}

// Format prints the request without its password, for every verb.
func (r ComputerAccountRequest) Format(f fmt.State, verb rune) {
	type plain ComputerAccountRequest
	m := plain(r)
	m.Password = redact.String(m.Password)
	redact.Format(f, verb, "ad.ComputerAccountRequest", m)
}

// CreateServiceAccount creates an enabled user account with a password. If
// it exists, the UPN, mail and password-expiry flag are brought in line.
func (c *Conn) CreateServiceAccount(ctx context.Context, req ServiceAccountRequest) (segkcd.Change, error) {
	const op = "create service account"
	name := strings.TrimSpace(req.Name)
	if err := checkName(op, name, 20); err != nil {
		return segkcd.Change{}, err
	}
	upn := req.UserPrincipalName
	if upn == "" {
		upn = name + "@" + c.info.DNSDomain
	}
	enc := req.EncryptionTypes
	if enc == 0 {
		enc = EncAES
	}
	return c.ensureAccount(ctx, op, name, func(acct *Account) error {
		if acct.IsComputer() || acct.IsGroup() {
			return fmt.Errorf("%s is not a user account", acct.SAMAccountName)
		}
		return nil
	}, func(acct *Account, ch *changes) {
		if !strings.EqualFold(acct.UserPrincipalName, upn) {
			ch.replace("userPrincipalName", upn, fmt.Sprintf("%q -> %q", acct.UserPrincipalName, upn))
		}
		if req.Mail != "" && acct.Mail != req.Mail {
			ch.replace("mail", req.Mail, fmt.Sprintf("%q -> %q", acct.Mail, req.Mail))
		}
		if req.PasswordNeverExpires && !acct.UserAccountControl.Has(UACDontExpirePassword) {
			next := acct.UserAccountControl | UACDontExpirePassword
			ch.replace("userAccountControl", strconv.FormatUint(uint64(next), 10), fmt.Sprintf("%v -> %v", acct.UserAccountControl, next))
		}
		if acct.SupportedEncryptionTypes != enc {
			ch.replace("msDS-SupportedEncryptionTypes", strconv.FormatUint(uint64(enc), 10),
				fmt.Sprintf("%v -> %v", acct.SupportedEncryptionTypes, enc))
		}
	}, func() (segkcd.Change, error) { return c.addServiceAccount(ctx, op, req, name, upn, enc) })
}

// addServiceAccount creates the user account CreateServiceAccount did not
// find.
func (c *Conn) addServiceAccount(ctx context.Context, op string, req ServiceAccountRequest, name, upn string, enc EncType) (segkcd.Change, error) {
	container := req.Container
	if container == "" {
		container = "CN=Users," + c.info.DefaultNamingContext
	}
	dn := "CN=" + ldap.EscapeDN(name) + "," + container
	if req.Password == "" {
		return segkcd.Change{}, invalid(op, dn, "a password is required to create an enabled account")
	}
	if err := c.requireTLS(op, dn); err != nil {
		return segkcd.Change{}, err
	}
	encoded, err := encodePassword(req.Password)
	if err != nil {
		return segkcd.Change{}, wrap(op, dn, err)
	}
	uac := UACNormalAccount
	if req.PasswordNeverExpires {
		uac |= UACDontExpirePassword
	}
	add := ldap.NewAddRequest(dn, nil)
	add.Attribute("objectClass", []string{"top", "person", "organizationalPerson", "user"})
	add.Attribute("cn", []string{name})
	add.Attribute("sAMAccountName", []string{name})
	add.Attribute("userPrincipalName", []string{upn})
	add.Attribute("userAccountControl", []string{strconv.FormatUint(uint64(uac), 10)})
	add.Attribute("msDS-SupportedEncryptionTypes", []string{strconv.FormatUint(uint64(enc), 10)})
	add.Attribute("unicodePwd", []string{encoded})
	for attr, v := range map[string]string{"mail": req.Mail, "displayName": req.DisplayName, "description": req.Description} {
		if v != "" {
			add.Attribute(attr, []string{v})
		}
	}
	if err := c.do(ctx, op, dn, func(l *ldap.Conn) error { return l.Add(add) }); err != nil {
		return segkcd.Change{}, err
	}
	return segkcd.Change{What: op, Action: segkcd.Created, Object: dn, Details: []string{"userPrincipalName=" + upn, "userAccountControl=" + uac.String()}}, nil
}

// ensureAccount is the skeleton of the Create*Account operations: the
// account sam is found; one of another kind (wrongKind's error) is
// ErrExists; one of the kind is brought in line (update lists the
// replacements, none is a no-op Change); none is created (create).
func (c *Conn) ensureAccount(ctx context.Context, op, sam string, wrongKind func(*Account) error,
	update func(*Account, *changes), create func() (segkcd.Change, error)) (segkcd.Change, error) {
	acct, err := c.findSAM(ctx, op, sam)
	switch {
	case err == nil:
		if err := wrongKind(acct); err != nil {
			return segkcd.Change{}, &Error{Op: op, Object: acct.DN, Kind: ErrExists, Err: err}
		}
		ch := &changes{mod: ldap.NewModifyRequest(acct.DN, nil)}
		update(acct, ch)
		return c.apply(ctx, op, ch.mod, ch.details)
	case isKind(err, ErrNotFound):
		return create()
	}
	return segkcd.Change{}, err
}

// changes are the replacements that bring an object in line, with a line
// each for the Change's details.
type changes struct {
	mod     *ldap.ModifyRequest
	details []string
}

// replace sets attr to value; how says from what to what ("old -> new").
func (ch *changes) replace(attr, value, how string) {
	ch.mod.Replace(attr, []string{value})
	ch.details = append(ch.details, attr+": "+how)
}

// SetAccountFlags sets and clears userAccountControl bits: it reads the
// value, applies the bits and replaces it. It refuses to set
// TRUSTED_FOR_DELEGATION (unconstrained delegation), and refuses a flag in
// both set and clear.
func (c *Conn) SetAccountFlags(ctx context.Context, account string, set, clear UAC) (segkcd.Change, error) {
	const op = "set account flags"
	if set&UACTrustedForDelegation != 0 {
		return segkcd.Change{}, &Error{Op: op, Object: account, Kind: ErrUnconstrainedDelegation,
			Err: fmt.Errorf("TRUSTED_FOR_DELEGATION lets the account impersonate anyone to any service; use constrained delegation (AddAllowedToDelegateTo)")}
	}
	if set&clear != 0 {
		return segkcd.Change{}, invalid(op, account, "flags %v both set and cleared", set&clear)
	}
	acct, err := c.FindAccount(ctx, account)
	if err != nil {
		return segkcd.Change{}, err
	}
	old := acct.UserAccountControl
	next := (old | set) &^ clear
	mod := ldap.NewModifyRequest(acct.DN, nil)
	var details []string
	if next != old {
		mod.Replace("userAccountControl", []string{strconv.FormatUint(uint64(next), 10)})
		details = append(details, fmt.Sprintf("userAccountControl: %v -> %v", old, next))
	}
	return c.apply(ctx, op, mod, details)
}

// SetSupportedEncryptionTypes sets msDS-SupportedEncryptionTypes, which
// decides the encryption type of tickets the KDC issues for the account.
func (c *Conn) SetSupportedEncryptionTypes(ctx context.Context, account string, enc EncType) (segkcd.Change, error) {
	const op = "set supported encryption types"
	if enc == 0 {
		return segkcd.Change{}, invalid(op, account, "no encryption type")
	}
	acct, err := c.FindAccount(ctx, account)
	if err != nil {
		return segkcd.Change{}, err
	}
	mod := ldap.NewModifyRequest(acct.DN, nil)
	var details []string
	if acct.SupportedEncryptionTypes != enc {
		mod.Replace("msDS-SupportedEncryptionTypes", []string{strconv.FormatUint(uint64(enc), 10)})
		details = append(details, fmt.Sprintf("msDS-SupportedEncryptionTypes: %v -> %v", acct.SupportedEncryptionTypes, enc))
	}
	return c.apply(ctx, op, mod, details)
}

// apply sends a modify if it has changes, and reports them.
func (c *Conn) apply(ctx context.Context, op string, mod *ldap.ModifyRequest, details []string) (segkcd.Change, error) {
	if len(mod.Changes) == 0 {
		return segkcd.Change{What: op, Action: segkcd.Unchanged, Object: mod.DN}, nil
	}
	if err := c.do(ctx, op, mod.DN, func(l *ldap.Conn) error { return l.Modify(mod) }); err != nil {
		return segkcd.Change{}, err
	}
	return segkcd.Change{What: op, Action: segkcd.Modified, Object: mod.DN, Details: details}, nil
}

// checkName validates a sAMAccountName the way AD does ([MS-SAMR] 3.1.1.6).
func checkName(op, name string, max int) error {
	if name == "" {
		return invalid(op, name, "empty name")
	}
	if n := len([]rune(name)); n > max {
		return invalid(op, name, "name is %d characters; at most %d", n, max)
	}
	if strings.ContainsAny(name, `"/\[]:;|=,+*?<>@`) || strings.TrimRight(name, ". ") != name {
		return invalid(op, name, `name holds a character AD refuses ("/\[]:;|=,+*?<>@ or a trailing dot)`)
	}
	return nil
}

// isKind reports whether err is an *Error of that kind.
func isKind(err, kind error) bool {
	e, ok := err.(*Error)
	return ok && e.Kind == kind
}
