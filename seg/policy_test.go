package seg

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/segkcd/segkcd/kerberos"
)

var testNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

const testPolicy = `{
 "allow": {"devices": ["VIPPHONE"], "users": ["CORP\\ceo"], "user_agents": ["^TrustedClient/"]},
 "block": {"devices": ["STOLEN1"], "users": ["mallory"], "device_types": ["BlackBerry"], "user_agents": ["^EvilSync"]},
 "devices": {
  "ALICE1": {"user": "alice", "managed": true, "encrypted": true, "last_seen": "2026-11-25T08:00:00Z"},
  "ROOTED": {"user": "bob", "managed": true, "compromised": true, "encrypted": true, "last_seen": "2026-11-25T08:00:00Z"},
  "PLAIN": {"user": "bob", "managed": true, "encrypted": false, "last_seen": "2026-11-25T08:00:00Z"},
  "STALE": {"user": "bob", "managed": true, "encrypted": true, "last_seen": "2026-09-01T08:00:00Z"},
  "UNMANAGED": {"managed": false},
  "VIPPHONE": {"user": "someone", "managed": false}
 },
 "rules": {"require_managed": true, "block_compromised": true, "require_encrypted": true, "max_inactive": "720h",
           "mail_clients": ["^Apple-iPhone", "^Outlook"], "device_types": ["iPhone", "Android", "BlackBerry"],
           "min_protocol_version": "14.0"}
}`

// testSIDs is the directory of the policy tests: each account's SID by its
// name, ASCII letters upper-cased (as AD folds them, and no further: the
// Kelvin sign's kelly is an account of its own).
var testSIDs = map[string]string{"ALICE": "S-1-5-21-7-1101", "BOB": "S-1-5-21-7-1102", "CEO": "S-1-5-21-7-1103",
	"MALLORY": "S-1-5-21-7-1104", "SOMEONE": "S-1-5-21-7-1105", "KELLY": "S-1-5-21-7-1106", "\u212aELLY": "S-1-5-21-7-1107"}

type sidDirectory map[string]string

func (d sidDirectory) Account(ctx context.Context, name string) (*kerberos.Account, error) {
	if s, ok := d[foldASCII(name)]; ok {
		return &kerberos.Account{User: name, Name: name, SID: s}, nil
	}
	return nil, fmt.Errorf("%w: %s", kerberos.ErrClientUnknown, name)
}

func testPolicyValue(t testing.TB) *Policy {
	t.Helper()
	p := &Policy{Names: Names{Realm: "CORP.EXAMPLE.TEST", NetBIOS: "CORP", Accounts: &Accounts{Resolver: sidDirectory(testSIDs)}},
		now: func() time.Time { return testNow }}
	r, err := ParsePolicy([]byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Set(r); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPolicyOrder(t *testing.T) {
	p := testPolicyValue(t)
	ok := PolicyInput{User: "alice", DeviceID: "ALICE1", DeviceType: "iPhone", UserAgent: "Apple-iPhone/1403", ProtocolVersion: "16.1"}
	for _, tc := range []struct {
		name  string
		edit  func(*PolicyInput)
		allow bool
		rule  string
	}{
		{"compliant", func(*PolicyInput) {}, true, "rules"},
		{"device id in another case", func(in *PolicyInput) { in.DeviceID = "alice1" }, true, "rules"},
		{"blocked device beats everything", func(in *PolicyInput) { in.DeviceID = "STOLEN1"; in.User = "ceo" }, false, "block.devices"},
		{"blocked user", func(in *PolicyInput) { in.User = "Mallory" }, false, "block.users"},
		{"blocked type", func(in *PolicyInput) { in.DeviceType = "blackberry" }, false, "block.device_types"},
		{"blocked agent", func(in *PolicyInput) { in.UserAgent = "EvilSync/2" }, false, "block.user_agents"},
		{"allowed device skips the rules", func(in *PolicyInput) { in.DeviceID = "VIPPHONE"; in.UserAgent = "Odd/1" }, true, "allow.devices"},
		{"allowed user in another form", func(in *PolicyInput) { in.User = "ceo"; in.DeviceID = "NEW" }, true, "allow.users"},
		{"allowed agent", func(in *PolicyInput) { in.DeviceID = "NEW"; in.UserAgent = "TrustedClient/9" }, true, "allow.user_agents"},
		{"unknown device", func(in *PolicyInput) { in.DeviceID = "NEW" }, false, "rules.require_managed"},
		{"unmanaged device", func(in *PolicyInput) { in.DeviceID = "UNMANAGED" }, false, "rules.require_managed"},
		{"someone else's device", func(in *PolicyInput) { in.User = "bob" }, false, "devices.user"},
		{"compromised", func(in *PolicyInput) { in.User = "bob"; in.DeviceID = "ROOTED" }, false, "rules.block_compromised"},
		{"not encrypted", func(in *PolicyInput) { in.User = "bob"; in.DeviceID = "PLAIN" }, false, "rules.require_encrypted"},
		{"inactive", func(in *PolicyInput) { in.User = "bob"; in.DeviceID = "STALE" }, false, "rules.max_inactive"},
		{"mail client", func(in *PolicyInput) { in.UserAgent = "K-9 Mail" }, false, "rules.mail_clients"},
		{"device type", func(in *PolicyInput) { in.DeviceType = "WindowsPhone" }, false, "rules.device_types"},
		{"old protocol", func(in *PolicyInput) { in.ProtocolVersion = "12.1" }, false, "rules.min_protocol_version"},
		{"Kelvin sign is not k", func(in *PolicyInput) { in.User = "\u212aelly" }, false, "devices.user"},
	} {
		in := ok
		tc.edit(&in)
		in.SID = testSIDs[foldASCII(in.User)]
		d := p.Decide(in)
		if d.Allow != tc.allow || d.Rule != tc.rule || d.Reason == "" {
			t.Errorf("%s: %+v, want allow=%v rule %s", tc.name, d, tc.allow, tc.rule)
		}
	}
}

func TestPolicyAuthorize(t *testing.T) {
	req := func(device string) *Request {
		h := httptest.NewRequest(http.MethodPost, "/Microsoft-Server-ActiveSync", nil)
		h.Header.Set("User-Agent", "Apple-iPhone/1403")
		return &Request{Identity: &Identity{User: "alice", SID: testSIDs["ALICE"]}, Params: Params{Cmd: "Sync", DeviceID: device, DeviceType: "iPhone", ProtocolVersion: "16.1"}, HTTP: h}
	}
	// Before any load: fail closed with 503, or open when asked.
	var empty Policy
	var e *Error
	if err := empty.Authorize(context.Background(), req("ALICE1")); !errors.As(err, &e) || e.Status != 503 || !errors.Is(err, ErrNoPolicy) {
		t.Errorf("no policy: %v", err)
	}
	if err := (&Policy{FailOpen: true}).Authorize(context.Background(), req("ALICE1")); err != nil {
		t.Errorf("fail open: %v", err)
	}
	p := testPolicyValue(t)
	p.BlockStatus = 456
	reg := prometheus.NewRegistry()
	var err error
	if p.Metrics, err = NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	var pe *PolicyError
	if err := p.Authorize(context.Background(), req("STOLEN1")); !errors.As(err, &e) || e.Status != 456 || !errors.As(err, &pe) || pe.Decision.Rule != "block.devices" {
		t.Errorf("blocked: %v", err)
	}
	if err := p.Authorize(context.Background(), req("ALICE1")); err != nil {
		t.Errorf("allowed: %v", err)
	}
	// Monitor mode: the block is logged and the request goes through.
	var log bytes.Buffer
	p.Monitor, p.Logger = true, slog.New(slog.NewTextHandler(&log, nil))
	if err := p.Authorize(context.Background(), req("STOLEN1")); err != nil {
		t.Errorf("monitor mode refused: %v", err)
	}
	if !strings.Contains(log.String(), "policy would block") || !strings.Contains(log.String(), "rule=block.devices") {
		t.Errorf("monitor log: %q", log.String())
	}
	for kind, want := range map[string]float64{"block": 1, "allow": 1, "monitor": 1} {
		if got := testutil.ToFloat64(p.Metrics.policy.WithLabelValues(kind, map[string]string{"block": "block.devices",
			"allow": "rules", "monitor": "block.devices"}[kind])); got != want {
			t.Errorf("decisions %s: %v", kind, got)
		}
	}
}

func TestParsePolicyRefuses(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field":     `{"alow": {}}`,
		"bad pattern":       `{"block": {"user_agents": ["("]}}`,
		"long pattern":      `{"block": {"user_agents": ["` + strings.Repeat("a", 600) + `"]}}`,
		"bad duration":      `{"rules": {"max_inactive": "a month"}}`,
		"negative duration": `{"rules": {"max_inactive": "-1h"}}`,
		"bad version":       `{"rules": {"min_protocol_version": "fourteen"}}`,
		"bad device id":     `{"devices": {"A\r\nB": {}}}`,
		"two documents":     `{} {}`,
		"not an object":     `[]`,
		"bad time":          `{"devices": {"A": {"last_seen": "yesterday"}}}`,
	} {
		if _, err := ParsePolicy([]byte(doc)); !errors.Is(err, ErrBadPolicy) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzParsePolicy: any document parses or is refused with ErrBadPolicy; what
// parses can be set and decided on.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(testPolicy))
	f.Add([]byte(`{"rules": {"require_managed": true}}`))
	f.Add([]byte(`{"devices": {"X": {"user": "a@b"}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParsePolicy(b)
		if err != nil {
			if !errors.Is(err, ErrBadPolicy) {
				t.Fatalf("not ErrBadPolicy: %v", err)
			}
			return
		}
		p := &Policy{}
		if err := p.Set(r); err != nil {
			t.Fatal(err)
		}
		p.Decide(PolicyInput{User: "alice", DeviceID: "X", DeviceType: "T", UserAgent: "U", ProtocolVersion: "14.1"})
	})
}

func TestPolicyFileReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.json")
	write := func(doc string) {
		tmp := path + ".new"
		os.WriteFile(tmp, []byte(doc), 0o600)
		os.Rename(tmp, path)
	}
	write(`{"block": {"devices": ["D1"]}}`)
	p := &Policy{}
	f := &PolicyFile{Path: path, Policy: p, Logger: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))}
	if err := f.Load(); err != nil {
		t.Fatal(err)
	}
	if p.Decide(PolicyInput{DeviceID: "D1"}).Allow {
		t.Fatal("D1 allowed")
	}
	write(`{"block": {"devices": ["D2"]}}`)
	if err := f.Load(); err != nil {
		t.Fatal(err)
	}
	if !p.Decide(PolicyInput{DeviceID: "D1"}).Allow || p.Decide(PolicyInput{DeviceID: "D2"}).Allow {
		t.Fatal("the new file was not taken")
	}
	// A broken file keeps the last good policy and says why.
	write(`{"block": {"devices": ["D3"]`)
	if err := f.Load(); !errors.Is(err, ErrBadPolicy) {
		t.Fatalf("broken file: %v", err)
	}
	if p.Decide(PolicyInput{DeviceID: "D2"}).Allow {
		t.Fatal("the last good policy was dropped")
	}
	// Run picks up a fixed file by itself.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.Interval = 20 * time.Millisecond
	go f.Run(ctx)
	write(`{"block": {"devices": ["D3"]}}`)
	deadline := time.Now().Add(5 * time.Second)
	for p.Decide(PolicyInput{DeviceID: "D3"}).Allow {
		if time.Now().After(deadline) {
			t.Fatal("Run did not reload the file")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mdm is an HTTP policy source: full documents with an ETag and a cursor,
// and deltas since a cursor.
type mdm struct {
	mu       sync.Mutex
	down     bool
	version  int
	doc      PolicyRules
	changes  map[int]PolicyDelta // version -> changes from version-1
	requests []string
}

func (m *mdm) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests = append(m.requests, r.URL.RawQuery+"|"+r.Header.Get("If-None-Match"))
	if m.down {
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
		return
	}
	etag := `"v` + string(rune('0'+m.version)) + `"`
	if since := r.URL.Query().Get("since"); since != "" {
		from := int(since[0] - '0')
		if from < m.version-3 {
			w.WriteHeader(http.StatusGone)
			return
		}
		if from == m.version {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		d := PolicyDelta{Cursor: string(rune('0' + m.version)), Devices: map[string]DeviceState{}}
		for v := from + 1; v <= m.version; v++ {
			for id, s := range m.changes[v].Devices {
				d.Devices[id] = s
			}
			d.Removed = append(d.Removed, m.changes[v].Removed...)
		}
		json.NewEncoder(w).Encode(d)
		return
	}
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	doc := m.doc
	doc.Cursor = string(rune('0' + m.version))
	w.Header().Set("ETag", etag)
	json.NewEncoder(w).Encode(doc)
}

func TestPolicyHTTP(t *testing.T) {
	m := &mdm{down: true, version: 1, changes: map[int]PolicyDelta{},
		doc: PolicyRules{Rules: PolicyChecks{RequireManaged: true}, Devices: map[string]DeviceState{"D1": {Managed: true}}}}
	srv := httptest.NewServer(m)
	defer srv.Close()
	p := &Policy{}
	h := &PolicyHTTP{URL: srv.URL + "/policy", Policy: p, Logger: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))}
	ctx := context.Background()
	allowed := func(id string) bool { return p.Decide(PolicyInput{DeviceID: id}).Allow }

	// The MDM is down before the first load: fail closed.
	if err := h.Poll(ctx); err == nil || allowed("D1") {
		t.Fatal("a policy without a load")
	}
	// Full load.
	m.mu.Lock()
	m.down = false
	m.mu.Unlock()
	if err := h.Poll(ctx); err != nil || !allowed("D1") || allowed("D2") {
		t.Fatalf("full load: %v", err)
	}
	// Nothing changed: a delta request answered 304.
	if err := h.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	// D2 enrolled, D1 removed: a delta.
	m.mu.Lock()
	m.version = 2
	m.changes[2] = PolicyDelta{Devices: map[string]DeviceState{"D2": {Managed: true}}, Removed: []string{"D1"}}
	m.mu.Unlock()
	if err := h.Poll(ctx); err != nil || allowed("D1") || !allowed("D2") {
		t.Fatalf("delta: %v", err)
	}
	// An outage keeps the last good policy.
	m.mu.Lock()
	m.down = true
	m.mu.Unlock()
	if err := h.Poll(ctx); err == nil || !allowed("D2") {
		t.Fatalf("outage: %v", err)
	}
	// Recovery after a long outage: the cursor is too old (410), then a full load.
	m.mu.Lock()
	m.down, m.version = false, 7
	m.doc.Devices = map[string]DeviceState{"D3": {Managed: true}}
	m.mu.Unlock()
	if err := h.Poll(ctx); err == nil {
		t.Fatal("an expired cursor was taken")
	}
	if err := h.Poll(ctx); err != nil || !allowed("D3") || allowed("D2") {
		t.Fatalf("recovery: %v", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// Down, full, delta (304), delta, delta (down), delta (410), full
	// (conditional on the first load's ETag, which no longer matches).
	want := []string{"|", "|", "since=1|", "since=1|", "since=2|", "since=2|", `|"v1"`}
	if strings.Join(m.requests, " ") != strings.Join(want, " ") {
		t.Errorf("requests: %q", m.requests)
	}
}

// BenchmarkPolicyDecide is the policy's cost per request: the test policy
// with 10,000 more devices, a compliant device that goes through every rule.
func BenchmarkPolicyDecide(b *testing.B) {
	p := testPolicyValue(b)
	r, _ := ParsePolicy([]byte(testPolicy))
	for i := 0; i < 10000; i++ {
		r.Devices[strconv.Itoa(i)] = DeviceState{Managed: true}
	}
	if err := p.Set(r); err != nil {
		b.Fatal(err)
	}
	in := PolicyInput{User: "alice", DeviceID: "ALICE1", DeviceType: "iPhone", UserAgent: "Apple-iPhone/1403", ProtocolVersion: "16.1"}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if !p.Decide(in).Allow {
			b.Fatal("blocked")
		}
	}
}

// BenchmarkMetricsRequest is the metrics' cost per request.
func BenchmarkMetricsRequest(b *testing.B) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		m.request("activesync", "Sync", 200, time.Millisecond)
	}
}

// The admin token and BasicAuth's HMAC key never show in formatted values.
func TestFormatHidesSecrets(t *testing.T) {
	a := &Admin{Token: "admin-secret-token-123"}
	b := &BasicAuth{Realm: "CORP.EXAMPLE.TEST"}
	b.once.Do(b.init)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		for _, v := range []any{a, b} {
			out := fmt.Sprintf(verb, v)
			if strings.Contains(out, "admin-secret-token-123") || strings.Contains(out, fmt.Sprint(b.key)) || strings.Contains(out, "verdict") {
				t.Errorf("%s of %T: %s", verb, v, out)
			}
		}
	}
}
