package seg

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/segkcd/segkcd/kerberos"
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
// regular expressions, RE2 syntax). Device ids and types compare without
// case; users compare as AD compares names, in any of their forms.
type PolicyList struct {
	Devices     []string `json:"devices,omitempty"`
	Users       []string `json:"users,omitempty"`
	DeviceTypes []string `json:"device_types,omitempty"`
	UserAgents  []string `json:"user_agents,omitempty"`
}

// DeviceState is what the MDM knows of one device.
type DeviceState struct {
	User        string    `json:"user,omitempty"` // the enrolled user; another user on it is blocked
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
		return nil, fmt.Errorf("%w: %d bytes", ErrBadPolicy, len(b))
	}
	var r PolicyRules
	if err := decodeStrict(b, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPolicy, err)
	}
	if _, err := compilePolicy(&r, Names{}); err != nil {
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

// compiled is a policy ready for lookups: sets keyed in upper case,
// patterns compiled.
type compiled struct {
	allow, block compiledList
	devices      map[string]DeviceState
	rules        PolicyChecks
	maxInactive  time.Duration
	mailClients  []*regexp.Regexp
	types        map[string]bool
	minProto     int
	loaded       time.Time
	source       *PolicyRules
}

type compiledList struct {
	devices, users, types map[string]bool
	agents                []*regexp.Regexp
}

// compilePolicy prepares r for lookups; users are keyed by the user names
// maps them to, upper-cased, so that a lookup is one map access.
func compilePolicy(r *PolicyRules, names Names) (*compiled, error) {
	c := &compiled{devices: make(map[string]DeviceState, len(r.Devices)), loaded: time.Now(), source: r}
	var err error
	if c.allow, err = compileList("allow", r.Allow, names); err != nil {
		return nil, err
	}
	if c.block, err = compileList("block", r.Block, names); err != nil {
		return nil, err
	}
	if len(r.Devices) > maxPolicyDevices {
		return nil, fmt.Errorf("%w: devices: %d entries", ErrBadPolicy, len(r.Devices))
	}
	for id, d := range r.Devices {
		if id == "" || checkText("device id", id, maxDeviceID) != nil {
			return nil, fmt.Errorf("%w: devices: bad device id %q", ErrBadPolicy, printable(id))
		}
		c.devices[kerberos.UpperName(id)] = d
	}
	c.rules = r.Rules
	if r.Rules.MaxInactive != "" {
		if c.maxInactive, err = time.ParseDuration(r.Rules.MaxInactive); err != nil || c.maxInactive <= 0 {
			return nil, fmt.Errorf("%w: rules.max_inactive: %q is not a positive duration", ErrBadPolicy, printable(r.Rules.MaxInactive))
		}
	}
	if c.mailClients, err = compilePatterns("rules.mail_clients", r.Rules.MailClients); err != nil {
		return nil, err
	}
	c.types = upperSet(r.Rules.DeviceTypes)
	if r.Rules.MinProtocol != "" {
		if c.minProto = protoNumber(r.Rules.MinProtocol); c.minProto == 0 {
			return nil, fmt.Errorf("%w: rules.min_protocol_version: %q is not like \"14.0\"", ErrBadPolicy, printable(r.Rules.MinProtocol))
		}
	}
	return c, nil
}

func compileList(name string, l PolicyList, names Names) (compiledList, error) {
	agents, err := compilePatterns(name+".user_agents", l.UserAgents)
	users := make(map[string]bool, len(l.Users))
	for _, u := range l.Users {
		users[names.key(u)] = true
	}
	return compiledList{devices: upperSet(l.Devices), users: users, types: upperSet(l.DeviceTypes), agents: agents}, err
}

func compilePatterns(field string, ps []string) ([]*regexp.Regexp, error) {
	if len(ps) > maxPatterns {
		return nil, fmt.Errorf("%w: %s: %d patterns", ErrBadPolicy, field, len(ps))
	}
	var out []*regexp.Regexp
	for _, p := range ps {
		if len(p) > maxPattern {
			return nil, fmt.Errorf("%w: %s: a pattern of %d bytes", ErrBadPolicy, field, len(p))
		}
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrBadPolicy, field, err)
		}
		out = append(out, re)
	}
	return out, nil
}

func upperSet(v []string) map[string]bool {
	m := make(map[string]bool, len(v))
	for _, s := range v {
		m[kerberos.UpperName(s)] = true
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
	User            string // the authenticated account (Identity.User)
	UPN             string // its UPN, when the directory said (Identity.UPN)
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
	// Names compares the users of the lists with the authenticated user.
	Names Names
	// Logger receives monitor-mode decisions (default slog.Default()).
	Logger *slog.Logger
	// Metrics, when set, counts decisions by kind and rule.
	Metrics *Metrics
	// Now replaces time.Now for the inactivity rule; nil means time.Now.
	now func() time.Time

	rules atomic.Pointer[compiled]
}

// ErrNoPolicy is the cause of a request refused because no policy has been
// loaded yet (fail closed).
var ErrNoPolicy = errors.New("seg: no device policy loaded yet")

// Set replaces the rules. It checks them as ParsePolicy does.
func (p *Policy) Set(r *PolicyRules) error {
	c, err := compilePolicy(r, p.Names)
	if err != nil {
		return err
	}
	p.rules.Store(c)
	return nil
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
	st, ok := c.devices[kerberos.UpperName(id)]
	return st, ok
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
	dev := kerberos.UpperName(in.DeviceID)
	typ := kerberos.UpperName(in.DeviceType)
	if d, ok := p.onList(&c.block, in, dev, typ); ok {
		return Decision{Rule: "block." + d, Reason: "on the global block list (" + d + ")"}
	}
	if d, ok := p.onList(&c.allow, in, dev, typ); ok {
		return Decision{Allow: true, Rule: "allow." + d, Reason: "on the global allow list (" + d + ")"}
	}
	state, known := c.devices[dev]
	r := c.rules
	switch {
	case r.RequireManaged && (!known || !state.Managed):
		return Decision{Rule: "rules.require_managed", Reason: "the device is not managed by the MDM"}
	case known && state.User != "" && !p.Names.Matches(state.User, &kerberos.Account{User: in.User, UPN: in.UPN}):
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
	case len(l.users) > 0 && (l.users[p.Names.key(in.User)] || in.UPN != "" && l.users[p.Names.key(in.UPN)]):
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
	d := p.Decide(PolicyInput{User: r.Identity.User, UPN: r.Identity.UPN, DeviceID: r.Params.DeviceID, DeviceType: r.Params.DeviceType,
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
