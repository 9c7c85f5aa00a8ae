package seg

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segkcd/segkcd/internal/sid"
)

// PolicyRules is an MDM's device policy, as the JSON that PolicyFile and
// PolicyHTTP read:
//
//	{"allow": {"devices": [...], "users": [...], "device_types": [...], "user_agents": ["^Outlook-iOS/"]},
//	 "block": {...the same...},
//	 "devices": {"ABC123": {"user": "alice", "managed": true, "compromised": false,
//	                        "encrypted": true, "last_seen": "2026-11-25T08:00:00Z"}},
//	 "rules": {"require_managed": true, "block_compromised": true, "require_encrypted": true,
//	           "max_inactive": "720h", "mail_clients": ["^Apple-iPhone", "^Outlook"],
//	           "device_types": ["iPhone", "Android"], "min_protocol_version": "14.0"},
//	 "cursor": "opaque, for PolicyHTTP's deltas"}
type PolicyRules struct {
	Allow   PolicyList             `json:"allow"`
	Block   PolicyList             `json:"block"`
	Devices map[string]DeviceState `json:"devices"`
	Rules   PolicyChecks           `json:"rules"`
	// Cursor, when the MDM sends one, is passed back as ?since= to ask for
	// the changes only (PolicyHTTP).
	Cursor string `json:"cursor,omitempty"`
}

// PolicyList names devices, users, device types and mail clients (User-Agent
// regular expressions, RE2 syntax). Device ids and types compare with their
// ASCII letters folded. A user is an account's SID ("S-1-5-21-...") or any
// name of it (UPN, DOMAIN\user, bare), which Policy.Set asks the directory
// about (Names.Accounts): the lists hold SIDs, and a request matches by its
// account's SID, never by comparing names. An entry that names no account
// matches no one and is reported (Policy.Unresolved, the log, -check).
type PolicyList struct {
	Devices     []string `json:"devices,omitempty"`
	Users       []string `json:"users,omitempty"`
	DeviceTypes []string `json:"device_types,omitempty"`
	UserAgents  []string `json:"user_agents,omitempty"`
}

// DeviceState is what the MDM knows of one device.
type DeviceState struct {
	User        string    `json:"user,omitempty"` // the enrolled user (SID or name); another account on it is blocked
	Managed     bool      `json:"managed"`
	Compromised bool      `json:"compromised"`
	Encrypted   bool      `json:"encrypted"`
	LastSeen    time.Time `json:"last_seen,omitempty"`
}

// PolicyChecks are the rules for devices on neither list.
type PolicyChecks struct {
	RequireManaged   bool     `json:"require_managed,omitempty"` // the device must be known and managed
	BlockCompromised bool     `json:"block_compromised,omitempty"`
	RequireEncrypted bool     `json:"require_encrypted,omitempty"`
	MaxInactive      string   `json:"max_inactive,omitempty"` // e.g. "720h": the MDM must have seen it since
	MailClients      []string `json:"mail_clients,omitempty"` // allowed User-Agent patterns; none: any
	DeviceTypes      []string `json:"device_types,omitempty"` // allowed device types; none: any
	MinProtocol      string   `json:"min_protocol_version,omitempty"`
}

// ErrBadPolicy is matched by ParsePolicy's errors.
var ErrBadPolicy = errors.New("seg: invalid policy")

// Limits that keep a hostile or broken policy from costing the request
// path much: patterns are RE2 (linear time) and bounded in size.
const (
	maxPolicyBytes   = 64 << 20
	maxPattern       = 512
	maxPatterns      = 256
	maxPolicyDevices = 1 << 21
)

// ParsePolicy reads and checks a policy document. Unknown fields, invalid
// patterns, durations and versions are errors that name the field.
func ParsePolicy(b []byte) (*PolicyRules, error) {
	if len(b) > maxPolicyBytes {
		return nil, errorf("%w: %d bytes", ErrBadPolicy, len(b))
	}
	var r PolicyRules
	if err := decodeStrict(b, &r); err != nil {
		return nil, errorf("%w: %v", ErrBadPolicy, err)
	}
	if _, err := compilePolicy(context.Background(), &r, Names{}, nil); err != nil {
		return nil, err
	}
	return &r, nil
}

// decodeStrict decodes one JSON document with no unknown fields.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the document")
	}
	return nil
}

// compiled is a policy ready for lookups: device ids and types keyed with
// ASCII letters folded, users by SID, patterns compiled.
type compiled struct {
	allow, block compiledList
	devices      map[string]compiledDevice
	rules        PolicyChecks
	maxInactive  time.Duration
	mailClients  []*regexp.Regexp
	types        map[string]bool
	minProto     int
	loaded       time.Time
	source       *PolicyRules
	// sids is each user entry's account, as the directory named it;
	// unresolved the entries it named none for (they match no one).
	sids       map[string]string
	unresolved []Unresolved
	// changes is Names.Accounts.Changes() when the names were resolved;
	// retry says some failed for a reason that may pass (no KDC).
	changes uint64
	retry   bool
	reasons map[string]string
}

type compiledList struct {
	devices, users, types map[string]bool // users: SIDs
	agents                []*regexp.Regexp
}

type compiledDevice struct {
	state DeviceState
	sid   string // the enrolled user's SID; "" when none or unresolved
}

// Unresolved is a user entry of the policy that names no account: it
// matches no one (an allow entry lets no one in, a block entry blocks no
// one, a device enrolled to it is blocked for everyone).
type Unresolved struct {
	Entry  string `json:"entry"`  // as the policy writes it
	Where  string `json:"where"`  // "allow.users", "block.users" or "devices.<id>.user"
	Reason string `json:"reason"` // what the directory said
}

// compilePolicy prepares r for lookups. With names.Accounts, every user
// entry is resolved to its account's SID first (prev, the policy in force,
// stands in for names the KDC could not be asked about); without, users are
// not resolved (ParsePolicy's check) and match only as SIDs.
func compilePolicy(ctx context.Context, r *PolicyRules, names Names, prev *compiled) (*compiled, error) {
	c := &compiled{devices: make(map[string]compiledDevice, len(r.Devices)), loaded: time.Now(), source: r}
	var err error
	c.changes = names.Accounts.Changes()
	c.sids = resolveUsers(ctx, r, names, prev, c)
	if c.allow, err = compileList("allow", r.Allow, c.sids); err != nil {
		return nil, err
	}
	if c.block, err = compileList("block", r.Block, c.sids); err != nil {
		return nil, err
	}
	if len(r.Devices) > maxPolicyDevices {
		return nil, errorf("%w: devices: %d entries", ErrBadPolicy, len(r.Devices))
	}
	for id, d := range r.Devices {
		if id == "" || checkText("device id", id, maxDeviceID) != nil {
			return nil, errorf("%w: devices: bad device id %q", ErrBadPolicy, printable(id))
		}
		c.devices[foldDeviceID(id)] = compiledDevice{state: d, sid: c.sids[d.User]}
		if d.User != "" && (c.sids[d.User] == "" || c.reasons[d.User] != "") && names.Accounts != nil {
			c.unresolved = append(c.unresolved, Unresolved{Entry: d.User, Where: "devices." + id + ".user", Reason: c.reason(d.User)})
		}
	}
	c.rules = r.Rules
	if r.Rules.MaxInactive != "" {
		if c.maxInactive, err = time.ParseDuration(r.Rules.MaxInactive); err != nil || c.maxInactive <= 0 {
			return nil, errorf("%w: rules.max_inactive: %q is not a positive duration", ErrBadPolicy, printable(r.Rules.MaxInactive))
		}
	}
	if c.mailClients, err = compilePatterns("rules.mail_clients", r.Rules.MailClients); err != nil {
		return nil, err
	}
	c.types = foldSet(r.Rules.DeviceTypes)
	if r.Rules.MinProtocol != "" {
		if c.minProto = protoNumber(r.Rules.MinProtocol); c.minProto == 0 {
			return nil, errorf("%w: rules.min_protocol_version: %q is not like \"14.0\"", ErrBadPolicy, printable(r.Rules.MinProtocol))
		}
	}
	return c, nil
}

func compileList(name string, l PolicyList, sids map[string]string) (compiledList, error) {
	agents, err := compilePatterns(name+".user_agents", l.UserAgents)
	users := make(map[string]bool, len(l.Users))
	for _, u := range l.Users {
		if s := sids[u]; s != "" {
			users[s] = true
		}
	}
	return compiledList{devices: foldSet(l.Devices), users: users, types: foldSet(l.DeviceTypes), agents: agents}, err
}

// resolveWorkers bounds the policy's questions to the KDC in flight, and
// resolveBudget the time Set spends on them all.
const (
	resolveWorkers = 8
	resolveBudget  = 2 * time.Minute
	// resolveEvery: the names are resolved again this often even when
	// Accounts counted no change (an answer it forgot before it changed,
	// under MaxEntries, is not counted); remembered answers cost nothing.
	resolveEvery = 5 * time.Minute
)

// resolveUsers maps each user entry of r to its account's SID: a SID as
// written, a name through names (the KDC, remembered by Accounts). A name
// the KDC could not be asked about keeps its SID from prev, the policy in
// force, so that a KDC outage during a reload does not empty a block list.
func resolveUsers(ctx context.Context, r *PolicyRules, names Names, prev *compiled, c *compiled) map[string]string {
	where := map[string]string{}
	add := func(u, w string) {
		if _, ok := where[u]; !ok && u != "" {
			where[u] = w
		}
	}
	blocked := map[string]bool{}
	for _, u := range r.Block.Users {
		add(u, "block.users")
		blocked[u] = true
	}
	for _, u := range r.Allow.Users {
		add(u, "allow.users")
	}
	for _, d := range r.Devices {
		add(d.User, "")
	}
	out := make(map[string]string, len(where))
	reasons := map[string]string{}
	var todo []string
	for u := range where {
		if s, ok := canonicalSID(u); ok {
			out[u] = s
		} else if looksLikeSID(u) {
			// Never a name: a SID whose numbers are out of range names no
			// one; reported, and the rest of the policy stands.
			reasons[u] = "not a SID: a number out of range, or too many"
		} else if names.Accounts != nil {
			todo = append(todo, u)
		}
	}
	if len(todo) > 0 {
		ctx, cancel := context.WithTimeout(ctx, resolveBudget)
		defer cancel()
		var mu sync.Mutex
		var wg sync.WaitGroup
		next := make(chan string)
		for range min(resolveWorkers, len(todo)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for u := range next {
					acct, err := names.Resolve(ctx, u)
					mu.Lock()
					switch {
					case err == nil:
						out[u] = acct.SID
					case prev != nil && prev.sids[u] != "" && (blocked[u] || !errors.Is(err, ErrBadName)):
						// Not answered (kept everywhere), or refused now
						// (deleted, disabled, locked out: kept on the
						// block list only, so that a blocked user who
						// locks their own account out does not leave
						// it, while an allow entry whose name has gone
						// lets no one in).
						out[u] = prev.sids[u]
						c.retry = c.retry || !errors.Is(err, ErrBadName)
						reasons[u] = err.Error() + "; its earlier account " + prev.sids[u] + " is kept"
					default:
						// Only an unanswered question is asked again
						// soon; a refusal waits for resolveEvery.
						c.retry = c.retry || !errors.Is(err, ErrBadName)
						reasons[u] = err.Error()
					}
					mu.Unlock()
				}
			}()
		}
		for _, u := range todo {
			next <- u
		}
		close(next)
		wg.Wait()
	}
	c.reasons = reasons
	for u, w := range where {
		if (out[u] == "" || reasons[u] != "") && w != "" && names.Accounts != nil {
			c.unresolved = append(c.unresolved, Unresolved{Entry: u, Where: w, Reason: c.reason(u)})
		}
	}
	return out
}

// looksLikeSID: "S-1-" in either case, then nothing but digits and dashes
// ("s-1-admin" is a name).
func looksLikeSID(u string) bool {
	if len(u) < 5 || !equalASCII(u[:4], "S-1-") {
		return false
	}
	for _, c := range []byte(u[4:]) {
		if (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// canonicalSID is a SID-like entry as AD writes it: an MDM may write
// "s-1-5-21-…" or keep leading zeros, and the same account must match.
func canonicalSID(u string) (string, bool) {
	if !looksLikeSID(u) {
		return "", false
	}
	parts := strings.Split(u[4:], "-")
	for i, p := range parts {
		if p == "" {
			return "", false
		}
		if t := strings.TrimLeft(p, "0"); t != "" {
			parts[i] = t
		} else {
			parts[i] = "0"
		}
	}
	s, err := sid.Parse("S-1-" + strings.Join(parts, "-"))
	return s, err == nil
}

func (c *compiled) reason(u string) string {
	if r := c.reasons[u]; r != "" {
		return r
	}
	return "not a SID, and the directory was not asked"
}

func compilePatterns(field string, ps []string) ([]*regexp.Regexp, error) {
	if len(ps) > maxPatterns {
		return nil, errorf("%w: %s: %d patterns", ErrBadPolicy, field, len(ps))
	}
	var out []*regexp.Regexp
	for _, p := range ps {
		if len(p) > maxPattern {
			return nil, errorf("%w: %s: a pattern of %d bytes", ErrBadPolicy, field, len(p))
		}
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, errorf("%w: %s: %v", ErrBadPolicy, field, err)
		}
		out = append(out, re)
	}
	return out, nil
}

func foldSet(v []string) map[string]bool {
	m := make(map[string]bool, len(v))
	for _, s := range v {
		m[foldDeviceID(s)] = true
	}
	return m
}

// protoNumber turns "14.1" into 141 (0 when it is not a version).
func protoNumber(v string) int {
	major, minor, ok := strings.Cut(v, ".")
	a, err1 := strconv.Atoi(major)
	b, err2 := strconv.Atoi(minor)
	if !ok || err1 != nil || err2 != nil || a < 1 || a > 99 || b < 0 || b > 9 {
		return 0
	}
	return a*10 + b
}

// PolicyInput is what a decision is made on.
type PolicyInput struct {
	// SID is the authenticated account's (Identity.SID): the lists and a
	// device's enrolled user are compared with it, and with nothing else.
	SID             string
	User            string // the account's name, for the log (Identity.User)
	UPN             string // its UPN (Identity.UPN), for the log
	DeviceID        string
	DeviceType      string
	UserAgent       string
	Cmd             string
	ProtocolVersion string
}

// Decision is the policy's answer. Rule says what decided ("block.devices",
// "rules.require_managed", ...), Reason says it for an administrator.
type Decision struct {
	Allow  bool   `json:"allow"`
	Rule   string `json:"rule"`
	Reason string `json:"reason"`
}

// Policy decides whether a device may sync, as SEG does: the global block
// list first, then the global allow list (a device on it skips the rules),
// then the rules. Decisions are map lookups and a few precompiled pattern
// matches on the rules in memory; the sources (PolicyFile, PolicyHTTP)
// replace the rules in the background, so a request never waits for I/O.
//
// Its Authorize method is a ProxyHandler.Authorize hook. Set the fields
// before first use; methods are safe for concurrent use.
type Policy struct {
	// BlockStatus is the status of a blocked request (default 403; 456 is
	// MS-ASHTTP's "blocked").
	BlockStatus int
	// Monitor logs what would be blocked and lets it through.
	Monitor bool
	// FailOpen lets requests through while no rules have been loaded yet.
	// By default they get 503 with Retry-After (fail closed).
	FailOpen bool
	// Names resolves the users the policy names to their accounts' SIDs
	// (Names.Accounts, the one the authenticators share). Without Accounts
	// only SIDs written in the policy match anyone.
	Names Names
	// Logger receives monitor-mode decisions (default slog.Default()).
	Logger *slog.Logger
	// Metrics, when set, counts decisions by kind and rule.
	Metrics *Metrics
	// Now replaces time.Now for the inactivity rule; nil means time.Now.
	now func() time.Time

	rules     atomic.Pointer[compiled]
	compiling atomic.Bool // a background recompile runs
}

// ErrNoPolicy is the cause of a request refused because no policy has been
// loaded yet (fail closed).
var ErrNoPolicy = errors.New("seg: no device policy loaded yet")

// Set replaces the rules. It checks them as ParsePolicy does, then asks the
// directory for the account of every user the rules name (Names.Accounts;
// for at most 2 minutes, 8 questions at a time, remembered by Accounts).
// Entries that name no account are logged and listed by Unresolved.
func (p *Policy) Set(r *PolicyRules) error {
	c, err := compilePolicy(context.Background(), r, p.Names, p.rules.Load())
	if err != nil {
		return err
	}
	p.rules.Store(c)
	p.report(c)
	return nil
}

// report logs the entries that name no account.
func (p *Policy) report(c *compiled) {
	for _, u := range c.unresolved {
		p.logger().LogAttrs(context.Background(), slog.LevelWarn, "policy entry names no account: it matches no one",
			slog.String("entry", printable(u.Entry)), slog.String("where", printable(u.Where)), slog.String("reason", u.Reason))
	}
}

// Unresolved lists the policy's user entries that name no account.
func (p *Policy) Unresolved() []Unresolved {
	c := p.rules.Load()
	if c == nil {
		return nil
	}
	return append([]Unresolved(nil), c.unresolved...)
}

// fresh resolves the rules in force again, in the background, when the
// directory's answers moved since they were resolved (a UPN passed to
// another account, Forget), a minute after some could not be had, and every
// 5 minutes; requests meanwhile are decided on the rules as they are.
func (p *Policy) fresh(c *compiled) {
	if p.Names.Accounts == nil {
		return
	}
	moved := c.changes != p.Names.Accounts.Changes()
	age := time.Since(c.loaded)
	if !moved && !(c.retry && age >= time.Minute) && !(len(c.sids) > 0 && age >= resolveEvery) {
		return
	}
	if !p.compiling.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer p.compiling.Store(false)
		n, err := compilePolicy(context.Background(), c.source, p.Names, c)
		if err == nil && p.rules.CompareAndSwap(c, n) {
			p.report(n)
		}
	}()
}

// Rules returns the rules in force and when they were loaded (nil before
// the first load).
func (p *Policy) Rules() (*PolicyRules, time.Time) {
	c := p.rules.Load()
	if c == nil {
		return nil, time.Time{}
	}
	return c.source, c.loaded
}

// deviceState returns what the policy in force knows of a device.
func (p *Policy) deviceState(id string) (DeviceState, bool) {
	c := p.rules.Load()
	if c == nil {
		return DeviceState{}, false
	}
	d, ok := c.devices[foldDeviceID(id)]
	return d.state, ok
}

// enrolledSID is the SID of the account a device is enrolled to, as the
// policy in force resolved it ("" for none).
func (p *Policy) enrolledSID(id string) string {
	c := p.rules.Load()
	if c == nil {
		return ""
	}
	return c.devices[foldDeviceID(id)].sid
}

// Decide evaluates in against the rules in force.
func (p *Policy) Decide(in PolicyInput) Decision {
	c := p.rules.Load()
	if c == nil {
		if p.FailOpen {
			return Decision{Allow: true, Rule: "no policy", Reason: "no policy loaded yet; failing open"}
		}
		return Decision{Rule: "no policy", Reason: "no policy loaded yet"}
	}
	p.fresh(c)
	dev := foldDeviceID(in.DeviceID)
	typ := foldDeviceID(in.DeviceType)
	if d, ok := p.onList(&c.block, in, dev, typ); ok {
		return Decision{Rule: "block." + d, Reason: "on the global block list (" + d + ")"}
	}
	if d, ok := p.onList(&c.allow, in, dev, typ); ok {
		return Decision{Allow: true, Rule: "allow." + d, Reason: "on the global allow list (" + d + ")"}
	}
	d, known := c.devices[dev]
	state := d.state
	r := c.rules
	switch {
	case r.RequireManaged && (!known || !state.Managed):
		return Decision{Rule: "rules.require_managed", Reason: "the device is not managed by the MDM"}
	case known && state.User != "" && (d.sid == "" || d.sid != in.SID):
		return Decision{Rule: "devices.user", Reason: "the device is enrolled to another user"}
	case r.BlockCompromised && known && state.Compromised:
		return Decision{Rule: "rules.block_compromised", Reason: "the device is compromised (jailbroken or rooted)"}
	case r.RequireEncrypted && (!known || !state.Encrypted):
		return Decision{Rule: "rules.require_encrypted", Reason: "the device is not known to be encrypted"}
	case c.maxInactive > 0 && (!known || p.clock().Sub(state.LastSeen) > c.maxInactive):
		return Decision{Rule: "rules.max_inactive", Reason: "the MDM has not seen the device within " + r.MaxInactive}
	case len(c.mailClients) > 0 && !anyMatch(c.mailClients, in.UserAgent):
		return Decision{Rule: "rules.mail_clients", Reason: "the mail client is not allowed"}
	case len(c.types) > 0 && !c.types[typ]:
		return Decision{Rule: "rules.device_types", Reason: "the device type is not allowed"}
	case c.minProto > 0 && protoNumber(in.ProtocolVersion) < c.minProto && in.ProtocolVersion != "":
		return Decision{Rule: "rules.min_protocol_version", Reason: "the ActiveSync version is older than " + r.MinProtocol}
	}
	return Decision{Allow: true, Rule: "rules", Reason: "the rules allow it"}
}

// onList reports which entry of l matches, if any.
func (p *Policy) onList(l *compiledList, in PolicyInput, dev, typ string) (string, bool) {
	switch {
	case dev != "" && l.devices[dev]:
		return "devices", true
	case in.SID != "" && l.users[in.SID]:
		return "users", true
	case typ != "" && l.types[typ]:
		return "device_types", true
	case anyMatch(l.agents, in.UserAgent):
		return "user_agents", true
	}
	return "", false
}

func anyMatch(res []*regexp.Regexp, s string) bool {
	for _, re := range res {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

func (p *Policy) clock() time.Time {
	if p.now != nil {
		return p.now()
	}
	return time.Now()
}

// PolicyError is the cause of a request the policy blocked.
type PolicyError struct{ Decision Decision }

// Error names the rule and the reason.
func (e *PolicyError) Error() string {
	return "seg: blocked by policy (" + e.Decision.Rule + "): " + e.Decision.Reason
}

// Authorize is the ProxyHandler.Authorize hook: a blocked request gets
// BlockStatus and a *PolicyError cause, or in monitor mode a log line and
// no refusal.
func (p *Policy) Authorize(ctx context.Context, r *Request) error {
	d := p.Decide(PolicyInput{SID: r.Identity.SID, User: r.Identity.User, UPN: r.Identity.UPN, DeviceID: r.Params.DeviceID, DeviceType: r.Params.DeviceType,
		UserAgent: r.HTTP.UserAgent(), Cmd: r.Params.Cmd, ProtocolVersion: r.Params.ProtocolVersion})
	p.Metrics.decision(d, p.Monitor)
	if d.Allow {
		return nil
	}
	if d.Rule == "no policy" {
		return &Error{Stage: StageAuthorize, Status: http.StatusServiceUnavailable, User: r.Identity.User, Err: ErrNoPolicy}
	}
	if p.Monitor {
		p.logger().LogAttrs(ctx, slog.LevelInfo, "policy would block", slog.String("user", r.Identity.User),
			slog.String("device", r.Params.DeviceID), slog.String("rule", d.Rule), slog.String("reason", d.Reason))
		return nil
	}
	status := p.BlockStatus
	if status == 0 {
		status = http.StatusForbidden
	}
	return &Error{Stage: StageAuthorize, Status: status, User: r.Identity.User, Err: &PolicyError{Decision: d}}
}

func (p *Policy) logger() *slog.Logger { return logOr(p.Logger) }
