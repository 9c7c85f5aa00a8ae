package exchange

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/internal/redact"
	"github.com/segkcd/segkcd/internal/wsman"
	"github.com/segkcd/segkcd/kerberos"
)

// Roll describes a roll of the ASA password: a new password on every
// server, then in AD.
type Roll struct {
	// Servers to roll, e.g. every Client Access server of the namespace.
	Servers []string
	// User is the credential as Exchange holds it: `CORP\EXCHASA$`.
	User string
	// AD resets the ASA's password once every server has it.
	AD *ad.Conn
	// Kerberos is any account of the ASA's realm (the gateway's service
	// account, an administrator). The roll asks the KDC for a ticket to the
	// ASA and opens it with each password the servers hold: that is how it
	// knows, without a logon as the ASA, which of them AD holds now.
	Kerberos *kerberos.Client
	// PasswordLength of the generated password (default 120, the length
	// computers use for their own passwords).
	PasswordLength int
	// KeytabRealm, when set, makes the roll return a keytab of the ASA's new
	// keys (for the account and each SPN it holds), so that a non-Windows
	// backend can accept the tickets.
	KeytabRealm string
}

// RollJournal is what a caller persists to finish a roll in another
// process (after a crash, on another replica). It holds no password: the
// roll's password is read back from the server that got it first, as
// RollAlternateServiceAccountPassword.ps1 -CopyFrom reads it.
type RollJournal struct {
	User    string
	Servers []string
	// Source is the server that got the new password first; SourceAdded
	// the WhenAdded of that credential, which identifies it.
	Source      string
	SourceAdded time.Time
	ADReset     bool // the AD password was reset to the roll's
	Done        bool
	Started     time.Time
}

// RollResult is what a roll did. After a failure, Resume finishes it with
// the same password, which the result keeps (unexported, never formatted);
// in another process, ResumeJournal does the same from the Journal.
type RollResult struct {
	Journal RollJournal
	Status  []Status       // every server after the roll
	Keytab  *keytab.Keytab // when Roll.KeytabRealm was set

	roll     Roll
	password string
}

// Format prints the result without the password, for every verb.
func (r RollResult) Format(f fmt.State, verb rune) {
	type plain struct {
		Journal RollJournal
		Status  []Status
		Keytab  string
	}
	m := plain{Journal: r.Journal, Status: r.Status}
	if r.Keytab != nil {
		m.Keytab = fmt.Sprintf("%d keys", len(r.Keytab.Entries))
	}
	redact.Format(f, verb, "exchange.RollResult", m)
}

// ServerState says whether a server can decrypt tickets now: whether the
// password AD holds for the ASA is its Latest or its Previous credential.
type ServerState struct {
	Server            string
	LatestIsCurrent   bool
	PreviousIsCurrent bool
	Err               error // the state could not be read
}

// Decrypts reports whether the server holds AD's current key.
func (s ServerState) Decrypts() bool { return s.LatestIsCurrent || s.PreviousIsCurrent }

// String says whether the server decrypts, and with which credential.
func (s ServerState) String() string {
	switch {
	case s.Err != nil:
		return s.Server + ": state unknown (" + s.Err.Error() + ")"
	case s.LatestIsCurrent:
		return s.Server + ": decrypts (AD's password is its Latest)"
	case s.PreviousIsCurrent:
		return s.Server + ": decrypts (AD's password is its Previous)"
	}
	return s.Server + ": CANNOT decrypt (holds no credential with AD's password)"
}

// RollError is a roll that stopped. State is what every server holds
// afterwards, read again after the failure, so that what the error says
// about tickets is what is true.
type RollError struct {
	Step  string // "read", "push to CAS2", "reset AD", "verify", ...
	State []ServerState
	Err   error
}

// Error says the step, the cause and what every server holds now.
func (e *RollError) Error() string {
	var parts []string
	for _, s := range e.State {
		parts = append(parts, s.String())
	}
	return fmt.Sprintf("exchange: roll stopped at %s: %v; now %s", e.Step, e.Err, strings.Join(parts, "; "))
}

// Unwrap returns the cause.
func (e *RollError) Unwrap() error { return e.Err }

// Hint is advice for the administrator: what the state means for tickets
// now, and how to finish.
func (e *RollError) Hint() string {
	var cannot []string
	for _, s := range e.State {
		if s.Err == nil && !s.Decrypts() {
			cannot = append(cannot, s.Server)
		}
	}
	h := "run the roll again (or Resume / ResumeJournal): it finds the unfinished roll by itself and keeps its password"
	if len(cannot) > 0 {
		h = strings.Join(cannot, ", ") + " cannot decrypt tickets for the mail SPN now; " + h
	}
	if c := hint(e.Err); c != "" {
		h = c + "; then " + h
	}
	return h
}

// stored is a server's credential with its password (read back).
type stored struct {
	user     string
	password string
	added    time.Time
}

// credentials reads a server's credentials with their passwords, Latest
// first.
func (o *Org) credentials(ctx context.Context, server string) ([]stored, error) {
	return o.readCredentials(ctx, "read ASA credentials", server, true)
}

// readCredentials reads a server's credentials, Latest first, with their
// passwords only when asked (status reads never fetch them).
func (o *Org) readCredentials(ctx context.Context, op, server string, passwords bool) ([]stored, error) {
	v, err := o.Version(ctx, server)
	if err != nil {
		return nil, err
	}
	qs, err := wsman.Quote(server)
	if err != nil {
		return nil, invalid(op, server, "the server name: %v", err)
	}
	// Dates through Get-Date -Format 'o': PowerShell 5.1's ConvertTo-Json
	// writes DateTime as "\/Date(ms)\/". @() keeps one-element lists as
	// lists.
	include, pws, fields := "Status", "", "users = $users; added = $added"
	if passwords {
		include = "Password"
		pws = "$pws = @($creds | Select-Object -ExpandProperty Credential | ForEach-Object -MemberName GetNetworkCredential | Select-Object -ExpandProperty Password)\n"
		fields += "; passwords = $pws"
	}
	script := preamble +
		"$cfg = Get-" + v.casNoun() + " -Identity " + qs + " -IncludeAlternateServiceAccountCredential" + include + " | Select-Object -ExpandProperty AlternateServiceAccountConfiguration\n" +
		"$creds = @($cfg | Select-Object -ExpandProperty EffectiveCredentials)\n" +
		"$users = @($creds | Select-Object -ExpandProperty Credential | Select-Object -ExpandProperty UserName)\n" +
		"$added = @($creds | Select-Object -ExpandProperty WhenAddedUTC | Get-Date -Format 'o')\n" +
		pws +
		"ConvertTo-Json -Compress -InputObject ([pscustomobject]@{ " + fields + " })\n"
	out, err := o.run(ctx, op, server, script)
	if err != nil {
		return nil, err
	}
	var raw struct {
		Users     []string `json:"users"`
		Added     []string `json:"added"`
		Passwords []string `json:"passwords"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &raw); err != nil || len(raw.Users) != len(raw.Added) ||
		passwords && len(raw.Users) != len(raw.Passwords) {
		return nil, unexpected(op, server, "not the JSON the script writes")
	}
	var cs []stored
	for i := range raw.Users {
		t, err := time.Parse(time.RFC3339Nano, raw.Added[i])
		if err != nil {
			return nil, unexpected(op, server, "date %q", raw.Added[i])
		}
		c := stored{user: raw.Users[i], added: t}
		if passwords {
			c.password = raw.Passwords[i]
		}
		cs = append(cs, c)
	}
	return cs, nil
}

// statusOf is the Status (no passwords) of credentials read back.
func statusOf(server string, cs []stored) Status {
	st := Status{Server: server}
	for i, c := range cs {
		cred := &Credential{UserName: c.user, WhenAdded: c.added}
		switch i {
		case 0:
			st.Latest = cred
		case 1:
			st.Previous = cred
		}
	}
	return st
}

// checker tells whether a password is the one AD holds for the ASA now,
// by opening a fresh ticket to the ASA with keys derived from it.
type checker struct {
	r      Roll
	sam    string
	realm  string
	domain string
	ticket *kerberos.Ticket
	memo   map[string]bool
}

func newChecker(r Roll) (*checker, error) {
	if r.Kerberos == nil {
		return nil, invalid("roll", "", "Roll.Kerberos is needed to tell which password AD holds")
	}
	return &checker{r: r, sam: r.User[strings.LastIndex(r.User, `\`)+1:], realm: r.Kerberos.Realm(),
		domain: r.AD.DomainInfo().DNSDomain}, nil
}

// refresh gets a new ticket (after AD's password may have changed).
func (c *checker) refresh(ctx context.Context) error {
	t, err := c.r.Kerberos.ServiceTicket(ctx, c.sam)
	if err != nil {
		return fmt.Errorf("a ticket to %s: %w", c.sam, err)
	}
	c.ticket, c.memo = t, map[string]bool{}
	return nil
}

func (c *checker) current(pw string) bool {
	if pw == "" || c.ticket == nil {
		return false
	}
	if v, ok := c.memo[pw]; ok {
		return v
	}
	kt, err := kerberos.KeytabFromPassword(kerberos.KeytabSpec{Realm: c.realm, SAMAccountName: c.sam, DNSDomain: c.domain,
		Password: pw, ETypes: []int32{c.ticket.Ticket.EncPart.EType}})
	ok := err == nil && c.ticket.OpensWith(kt)
	c.memo[pw] = ok
	return ok
}

// CheckASA reads every server's credentials and says which of them hold
// the password AD has for the ASA now (a roll check: a server whose Latest
// is not current is mid-roll or stale; one that holds it nowhere cannot
// decrypt tickets).
func (o *Org) CheckASA(ctx context.Context, r Roll) ([]ServerState, error) {
	ck, err := newChecker(r)
	if err != nil {
		return nil, err
	}
	if err := ck.refresh(ctx); err != nil {
		return nil, &Error{Op: "check ASA", Err: err}
	}
	return o.states(ctx, r, ck), nil
}

func (o *Org) states(ctx context.Context, r Roll, ck *checker) []ServerState {
	var out []ServerState
	for _, s := range r.Servers {
		st := ServerState{Server: s}
		cs, err := o.credentials(ctx, s)
		switch {
		case err != nil:
			st.Err = err
		default:
			st.LatestIsCurrent = len(cs) > 0 && strings.EqualFold(cs[0].user, r.User) && ck.current(cs[0].password)
			st.PreviousIsCurrent = len(cs) > 1 && strings.EqualFold(cs[1].user, r.User) && ck.current(cs[1].password)
		}
		out = append(out, st)
	}
	return out
}

// RollASAPassword rolls the ASA password so that no failure, retry or
// process death at any point leaves a server without AD's current key:
//
//  1. Read every server's credentials (with their passwords) and find out
//     which password AD holds now (a ticket to the ASA opens with it).
//  2. Push the new password to each server whose Latest is not already it.
//     A server is pushed only when, afterwards, it still holds AD's
//     password (its Latest was AD's, so it becomes Previous); a server left
//     by an earlier failure is given AD's password back first.
//  3. Reset the ASA's password in AD, once every server holds the new one.
//  4. Verify that every server's Latest is AD's password.
//
// A roll finds an unfinished one by itself: when a server's Latest is a
// password AD does not hold, the roll adopts it instead of making another,
// which would push AD's password out of that server's Previous. A failed
// roll is a *RollError that says what each server holds afterwards; run the
// roll again, Resume it, or ResumeJournal in a new process.
func (o *Org) RollASAPassword(ctx context.Context, r Roll) (*RollResult, error) {
	if err := checkRoll(r); err != nil {
		return nil, err
	}
	res := &RollResult{roll: r, Journal: RollJournal{User: r.User, Servers: r.Servers, Started: time.Now().UTC()}}
	return res, o.resume(ctx, res)
}

func checkRoll(r Roll) error {
	if len(r.Servers) == 0 || r.AD == nil || r.Kerberos == nil || !strings.Contains(r.User, `\`) {
		return invalid("roll", "", `servers, an AD connection, a Kerberos client and the user as DOMAIN\NAME$ are needed`)
	}
	if _, err := wsman.Quote(r.User); err != nil {
		return invalid("roll", "", "the user name: %v", err)
	}
	return nil
}

// Resume finishes a roll that failed, with the same password.
func (o *Org) Resume(ctx context.Context, res *RollResult) error {
	if res == nil {
		return invalid("resume roll", "", "no roll to resume")
	}
	return o.resume(ctx, res)
}

// ResumeJournal finishes a roll from its journal, in any process: r gives
// a fresh AD connection and Kerberos client, and may correct the server
// list (its User must be the journal's).
func (o *Org) ResumeJournal(ctx context.Context, j RollJournal, r Roll) (*RollResult, error) {
	if len(r.Servers) == 0 {
		r.Servers = j.Servers
	}
	if r.User == "" {
		r.User = j.User
	}
	if !strings.EqualFold(r.User, j.User) {
		return nil, invalid("resume roll", "", "the journal is a roll of %s, not %s", j.User, r.User)
	}
	if err := checkRoll(r); err != nil {
		return nil, err
	}
	j.Servers = r.Servers
	res := &RollResult{roll: r, Journal: j}
	return res, o.resume(ctx, res)
}

func (o *Org) resume(ctx context.Context, res *RollResult) error {
	r := res.roll
	ck, err := newChecker(r)
	if err != nil {
		return err
	}
	step := "read"
	failed := func(err error) error {
		// Read the state again, whatever happened, so the error says what is true.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if ck.refresh(sctx) != nil {
			ck.ticket = nil
		}
		st := o.states(sctx, r, ck)
		if ck.ticket == nil {
			for i := range st {
				st[i].Err = errors.New("no ticket to the ASA to check against")
			}
		}
		return &RollError{Step: step, State: st, Err: err}
	}
	if err := ck.refresh(ctx); err != nil {
		return failed(err)
	}
	creds := map[string][]stored{}
	for _, s := range r.Servers {
		cs, err := o.credentials(ctx, s)
		if err != nil {
			return failed(err)
		}
		creds[strings.ToLower(s)] = cs
	}
	mine := func(c stored) bool { return strings.EqualFold(c.user, r.User) }
	// AD's current password, when a server holds it.
	var current string
	for _, s := range r.Servers {
		for _, c := range creds[strings.ToLower(s)] {
			if current == "" && mine(c) && ck.current(c.password) {
				current = c.password
			}
		}
	}
	// The roll's password: in memory, from the journal's source, an
	// unfinished roll's (a Latest AD does not hold), or a new one.
	if res.password == "" && res.Journal.Source != "" {
		if cs := creds[strings.ToLower(res.Journal.Source)]; len(cs) > 0 && cs[0].added.Equal(res.Journal.SourceAdded) && mine(cs[0]) {
			res.password = cs[0].password
		}
	}
	if res.password == "" {
		for _, s := range r.Servers {
			if cs := creds[strings.ToLower(s)]; len(cs) > 0 && mine(cs[0]) && !ck.current(cs[0].password) && cs[0].password != "" {
				res.password = cs[0].password
				res.Journal.Source, res.Journal.SourceAdded = s, cs[0].added
				break
			}
		}
	}
	if res.password == "" {
		n := r.PasswordLength
		if n == 0 {
			n = 120
		}
		if res.password, err = ad.GeneratePassword(n, ck.sam); err != nil {
			return err
		}
	}
	next := res.password
	// What AD holds decides, not what the journal says.
	res.Journal.ADReset = ck.current(next)
	if res.Journal.ADReset {
		current = next // the reset went through before
	}
	push := func(s, pw string) error {
		step = "push to " + s
		if _, err := o.SetASA(ctx, s, r.User, pw); err != nil {
			return err
		}
		cs, err := o.credentials(ctx, s)
		if err != nil {
			return err
		}
		creds[strings.ToLower(s)] = cs
		if len(cs) == 0 || cs[0].password != pw {
			return fmt.Errorf("%s does not hold the password just set", s)
		}
		if pw == next && res.Journal.Source == "" {
			res.Journal.Source, res.Journal.SourceAdded = s, cs[0].added
		}
		return nil
	}
	for _, s := range r.Servers {
		cs := creds[strings.ToLower(s)]
		var latest, previous string
		if len(cs) > 0 && mine(cs[0]) {
			latest = cs[0].password
		}
		if len(cs) > 1 && mine(cs[1]) {
			previous = cs[1].password
		}
		if latest == next && (current == "" || current == next || previous == current) {
			if res.Journal.Source == "" {
				res.Journal.Source, res.Journal.SourceAdded = s, cs[0].added
			}
			continue
		}
		// Pushing next makes latest the Previous: that must be AD's password.
		if current != "" && latest != current && current != next {
			if err := push(s, current); err != nil {
				return failed(err)
			}
		}
		if err := push(s, next); err != nil {
			return failed(err)
		}
	}
	if !res.Journal.ADReset {
		step = "reset AD"
		if _, err := r.AD.ResetPassword(ctx, ck.sam, next); err != nil {
			return failed(err)
		}
		res.Journal.ADReset = true
	}
	step = "verify"
	if err := ck.refresh(ctx); err != nil {
		return failed(err)
	}
	if !ck.current(next) {
		return failed(errors.New("AD does not hold the rolled password"))
	}
	res.Status = res.Status[:0]
	for _, s := range r.Servers {
		cs, err := o.credentials(ctx, s)
		if err != nil {
			return failed(err)
		}
		if len(cs) == 0 || cs[0].password != next {
			return failed(fmt.Errorf("%s does not hold the rolled password as Latest", s))
		}
		res.Status = append(res.Status, statusOf(s, cs))
	}
	res.Journal.Done = true
	if r.KeytabRealm != "" {
		kt, err := asaKeytab(ctx, r, r.KeytabRealm, ck, next)
		if err != nil {
			return err
		}
		res.Keytab = kt
	}
	return nil
}

// asaKeytab is the keytab of the ASA's keys from its password: for the
// account and each SPN it holds, at AD's key version, in its encryption
// types.
func asaKeytab(ctx context.Context, r Roll, realm string, ck *checker, password string) (*keytab.Keytab, error) {
	const op = "ASA keytab"
	acct, err := r.AD.FindAccount(ctx, ck.sam)
	if err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	kt, err := kerberos.KeytabFromPassword(kerberos.KeytabSpec{Realm: realm, SAMAccountName: acct.SAMAccountName,
		DNSDomain: ck.domain, Principals: append([]string{acct.SAMAccountName}, acct.SPNs...), Password: password,
		KVNO: uint32(acct.KeyVersion), ETypes: etypesFor(acct.SupportedEncryptionTypes)})
	if err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	return kt, nil
}

// ASAKeytab is a keytab of the ASA's keys as AD holds them now, for a
// non-Windows backend (or a check) to accept tickets for the mail SPNs: it
// reads the servers' credentials back with their passwords (as the roll
// script's -CopyFrom does), takes the first that opens a fresh ticket to
// the ASA, and derives the keys for the realm (empty: r.Kerberos's). It
// fails with ErrNoCurrentCredential when no server holds AD's password.
func (o *Org) ASAKeytab(ctx context.Context, r Roll, realm string) (*keytab.Keytab, error) {
	if err := checkRoll(r); err != nil {
		return nil, err
	}
	if realm == "" {
		realm = r.Kerberos.Realm()
	}
	ck, err := newChecker(r)
	if err != nil {
		return nil, err
	}
	if err := ck.refresh(ctx); err != nil {
		return nil, &Error{Op: "ASA keytab", Err: err}
	}
	for _, s := range r.Servers {
		cs, err := o.credentials(ctx, s)
		if err != nil {
			return nil, err
		}
		for _, c := range cs {
			if strings.EqualFold(c.user, r.User) && ck.current(c.password) {
				return asaKeytab(ctx, r, realm, ck, c.password)
			}
		}
	}
	return nil, &Error{Op: "ASA keytab", Server: strings.Join(r.Servers, ", "), Err: ErrNoCurrentCredential}
}

// etypesFor lists the keytab's encryption types for an account's
// msDS-SupportedEncryptionTypes: no RC4 key for an AES-only account (zero,
// unset, means the DC's default, which still includes RC4).
func etypesFor(enc ad.EncType) []int32 {
	if enc == 0 {
		return nil
	}
	var out []int32
	if enc&ad.EncAES256 != 0 {
		out = append(out, etypeID.AES256_CTS_HMAC_SHA1_96)
	}
	if enc&ad.EncAES128 != 0 {
		out = append(out, etypeID.AES128_CTS_HMAC_SHA1_96)
	}
	if enc&ad.EncRC4HMAC != 0 {
		out = append(out, etypeID.RC4_HMAC)
	}
	return out
}
