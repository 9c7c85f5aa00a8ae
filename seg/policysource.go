package seg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"time"
)

// PolicyFile keeps a Policy loaded from a JSON file (see PolicyRules). Run
// looks at the file every Interval and loads it again when its time or size
// changed; a file that does not parse keeps the last good policy and is
// logged, as is one that cannot be read. One goroutine runs Load or Run.
type PolicyFile struct {
	Path   string
	Policy *Policy
	// Interval between looks at the file (default 5s).
	Interval time.Duration
	// Logger receives reloads and failures (default slog.Default()).
	Logger *slog.Logger

	last os.FileInfo // of the last good load
}

// Load reads the file if it changed since the last good load. It returns
// the reason a changed file was not taken.
func (f *PolicyFile) Load() error {
	st, err := os.Stat(f.Path)
	if err != nil {
		return fmt.Errorf("seg: policy file: %w", err)
	}
	if unchanged(f.last, st) {
		return nil
	}
	b, err := os.ReadFile(f.Path)
	if err != nil {
		return fmt.Errorf("seg: policy file: %w", err)
	}
	r, err := ParsePolicy(b)
	if err == nil {
		err = f.Policy.Set(r)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", f.Path, err)
	}
	f.last = st
	logOr(f.Logger).Info("policy loaded", "file", f.Path, "devices", len(r.Devices))
	return nil
}

// Run loads the file now and then every Interval until ctx ends.
func (f *PolicyFile) Run(ctx context.Context) {
	var last string
	repeat(ctx, f.Interval, 5*time.Second, func() {
		if err := f.Load(); err != nil {
			if err.Error() != last { // once per new failure, not every 5 seconds
				logOr(f.Logger).Warn("policy file not loaded; keeping the last good policy", "error", err.Error())
			}
			last = err.Error()
		} else {
			last = ""
		}
	})
}

// PolicyHTTP keeps a Policy loaded from an MDM's HTTP endpoint that serves
// PolicyRules as JSON, polled every Interval (default 10m, as SEG polls).
//
// The first load and any load without a cursor are full: GET URL, with
// If-None-Match once the MDM has sent an ETag (304: nothing changed).
// When a full document carries a "cursor", the next polls ask for the
// changes only: GET URL?since=<cursor>, answered with a PolicyDelta (or
// 304 when nothing changed, or 410 when the cursor is too old, which makes
// the next poll a full load). Through an MDM outage the last good policy
// stays in force; before the first successful load, Policy.FailOpen
// decides. One goroutine runs Poll or Run; they keep the cursor and ETag
// between calls and are not for concurrent use.
type PolicyHTTP struct {
	URL    string
	Policy *Policy
	// Client sends the requests (default: a client with a 30s timeout).
	// Give it the MDM's TLS roots and credentials (e.g. a Transport that
	// adds a bearer token).
	Client *http.Client
	// Interval between polls (default 10m).
	Interval time.Duration
	// Logger receives loads and failures (default slog.Default()).
	Logger *slog.Logger

	etag   string
	cursor string
	rules  *PolicyRules
}

// PolicyDelta is the MDM's answer to ?since=: the devices that changed and
// the devices removed since the cursor, and the new cursor. Lists and rules
// change with full loads only.
type PolicyDelta struct {
	Cursor  string                 `json:"cursor"`
	Devices map[string]DeviceState `json:"devices,omitempty"`
	Removed []string               `json:"removed,omitempty"`
}

// Poll asks the MDM once: a full load or the changes since the cursor.
func (h *PolicyHTTP) Poll(ctx context.Context) error {
	u, err := url.Parse(h.URL)
	if err != nil {
		return fmt.Errorf("seg: policy URL: %w", err)
	}
	delta := h.cursor != "" && h.rules != nil
	if delta {
		q := u.Query()
		q.Set("since", h.cursor)
		u.RawQuery = q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if !delta && h.etag != "" && h.rules != nil {
		req.Header.Set("If-None-Match", h.etag)
	}
	client := h.Client
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("seg: policy source: %w", err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified:
		return nil
	case resp.StatusCode == http.StatusGone && delta:
		h.cursor = "" // too old: a full load next time
		return errors.New("seg: policy source: cursor expired; a full load follows")
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("seg: policy source: %s", resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxPolicyBytes+1))
	if err != nil {
		return fmt.Errorf("seg: policy source: %w", err)
	}
	if delta {
		return h.applyDelta(b)
	}
	r, err := ParsePolicy(b)
	if err == nil {
		err = h.Policy.Set(r)
	}
	if err != nil {
		return err
	}
	h.rules, h.cursor, h.etag = r, r.Cursor, resp.Header.Get("ETag")
	logOr(h.Logger).Info("policy loaded", "source", h.URL, "devices", len(r.Devices))
	return nil
}

func (h *PolicyHTTP) applyDelta(b []byte) error {
	var d PolicyDelta
	if err := decodeStrict(b, &d); err != nil {
		return errorf("%w: delta: %v", ErrBadPolicy, err)
	}
	next := *h.rules
	next.Devices = make(map[string]DeviceState, len(h.rules.Devices)+len(d.Devices))
	for id, s := range h.rules.Devices {
		next.Devices[id] = s
	}
	for id, s := range d.Devices {
		next.Devices[id] = s
	}
	for _, id := range d.Removed {
		delete(next.Devices, id)
	}
	if err := h.Policy.Set(&next); err != nil {
		return err
	}
	h.rules = &next
	if d.Cursor != "" {
		h.cursor = d.Cursor
	}
	if len(d.Devices)+len(d.Removed) > 0 {
		logOr(h.Logger).Info("policy changes applied", "source", h.URL, "changed", len(d.Devices), "removed", len(d.Removed))
	}
	return nil
}

// Run polls now and then every Interval until ctx ends. Failures are
// logged and the last good policy stays.
func (h *PolicyHTTP) Run(ctx context.Context) {
	repeat(ctx, h.Interval, 10*time.Minute, func() {
		if err := h.Poll(ctx); err != nil && ctx.Err() == nil {
			logOr(h.Logger).Warn("policy source failed; keeping the last good policy", "source", h.URL, "error", err.Error())
		}
	})
}

// repeat calls fn now and then every interval (def when it is not
// positive) until ctx ends.
func repeat(ctx context.Context, interval, def time.Duration, fn func()) {
	if interval <= 0 {
		interval = def
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		fn()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// unchanged tells whether a file is still the one last read: the same
// inode (a replacement renamed into place is a new one), time and size.
func unchanged(last, now os.FileInfo) bool {
	return last != nil && os.SameFile(last, now) && last.ModTime().Equal(now.ModTime()) && last.Size() == now.Size()
}

func logOr(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.Default()
}
