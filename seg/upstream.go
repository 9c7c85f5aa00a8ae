package seg

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Upstream is one Exchange server (or a load-balanced namespace) the gateway
// forwards to, with the SPN its tickets are for. The zero health state is
// healthy; HealthCheck and failed connections change it.
type Upstream struct {
	URL *url.URL
	// SPN defaults to "HTTP/" + URL's host name.
	SPN string

	down    atomic.Bool
	lastErr atomic.Value                       // string
	bound   atomic.Pointer[certificateBinding] // the last certificate seen, and its channel binding
}

// TicketSPN is the SPN tickets for this upstream are asked for: SPN, or
// "HTTP/" and the URL's host name.
func (u *Upstream) TicketSPN() string {
	if u.SPN != "" {
		return u.SPN
	}
	return "HTTP/" + u.URL.Hostname()
}

// Healthy reports the last health state and, when unhealthy, why.
func (u *Upstream) Healthy() (bool, string) {
	if !u.down.Load() {
		return true, ""
	}
	why, _ := u.lastErr.Load().(string)
	return false, why
}

func (u *Upstream) setHealth(err error) {
	if err != nil {
		u.lastErr.Store(err.Error())
	}
	u.down.Store(err != nil)
}

// HealthCheck probes upstreams on an interval: an HTTP GET of the
// ActiveSync path without credentials, which Exchange answers 401; any
// answer below 500 counts as healthy, no answer or a 5xx as down. A down
// upstream is skipped for users without a redirect until a probe succeeds
// again (the gateway also marks one down when a connection to it fails).
type HealthCheck struct {
	Upstreams []*Upstream
	// Client sends the probes; give it the TLS roots of the upstreams
	// (default: a client with a 5s timeout and the system roots).
	Client *http.Client
	// Interval between rounds (default 10s).
	Interval time.Duration
	Metrics  *Metrics
	Logger   *slog.Logger
}

// Check probes every upstream once.
func (hc *HealthCheck) Check(ctx context.Context) {
	client := hc.Client
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	var wg sync.WaitGroup
	for _, u := range hc.Upstreams {
		wg.Add(1)
		go func(u *Upstream) {
			defer wg.Done()
			err := probe(ctx, client, u)
			was, _ := u.Healthy()
			u.setHealth(err)
			hc.Metrics.upstream(u.URL.Host, err == nil)
			switch {
			case was && err != nil:
				logOr(hc.Logger).Warn("upstream down", "upstream", u.URL.Host, "error", err.Error())
			case !was && err == nil:
				logOr(hc.Logger).Info("upstream up again", "upstream", u.URL.Host)
			}
		}(u)
	}
	wg.Wait()
}

func probe(ctx context.Context, client *http.Client, u *Upstream) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.URL.JoinPath(easPath).String(), nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return fmt.Errorf("health probe: %s", resp.Status)
	}
	return nil
}

// Run checks now and then every Interval until ctx ends.
func (hc *HealthCheck) Run(ctx context.Context) {
	repeat(ctx, hc.Interval, 10*time.Second, func() { hc.Check(ctx) })
}

// Redirects remembers which upstream serves an account after Exchange
// answered 451 (MS-ASHTTP: the mailbox is elsewhere; X-MS-Location says
// where), so that the account's next requests go there. Mappings are keyed
// by the account's SID; its name is kept for List only. Entries end after TTL; the map
// is bounded (least recently used first). The zero value is ready to use.
type Redirects struct {
	// TTL of a mapping (default 24h).
	TTL time.Duration
	// MaxEntries bounds the map (default 100000).
	MaxEntries int

	mu    sync.Mutex
	users map[string]*list.Element // SID -> *redirect
	lru   list.List
}

type redirect struct {
	key, user string
	upstream  *Upstream
	expires   time.Time
}

// Redirect is one account's mapping, as List returns it.
type Redirect struct {
	SID      string    `json:"sid"`
	User     string    `json:"user"`
	Upstream string    `json:"upstream"`
	Expires  time.Time `json:"expires"`
}

// Set maps the account sid (named user, for List) to u.
func (r *Redirects) Set(sid, user string, u *Upstream) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.users == nil {
		r.users = map[string]*list.Element{}
	}
	key := sid
	if e, ok := r.users[key]; ok {
		r.lru.Remove(e)
	}
	ttl := r.TTL
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	r.users[key] = r.lru.PushFront(&redirect{key: key, user: user, upstream: u, expires: time.Now().Add(ttl)})
	max := r.MaxEntries
	if max <= 0 {
		max = 100000
	}
	for r.lru.Len() > max {
		old := r.lru.Back()
		r.lru.Remove(old)
		delete(r.users, old.Value.(*redirect).key)
	}
}

// Get returns the upstream the account sid is mapped to, if any.
func (r *Redirects) Get(sid string) *Upstream {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.users[sid]
	if !ok {
		return nil
	}
	rd := e.Value.(*redirect)
	if time.Now().After(rd.expires) {
		r.lru.Remove(e)
		delete(r.users, rd.key)
		return nil
	}
	r.lru.MoveToFront(e)
	return rd.upstream
}

// List returns the mappings in force.
func (r *Redirects) List() []Redirect {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []Redirect{}
	now := time.Now()
	for e := r.lru.Front(); e != nil; e = e.Next() {
		rd := e.Value.(*redirect)
		if now.Before(rd.expires) {
			out = append(out, Redirect{SID: rd.key, User: rd.user, Upstream: rd.upstream.URL.String(), Expires: rd.expires})
		}
	}
	return out
}

// Clear drops one account's mapping, or all of them when sid is "".
func (r *Redirects) Clear(sid string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if sid == "" {
		r.users = nil
		r.lru.Init()
		return
	}
	if e, ok := r.users[sid]; ok {
		r.lru.Remove(e)
		delete(r.users, sid)
	}
}

// errUnknownRedirect: Exchange sent a device to a server the gateway does
// not forward to.
var errUnknownRedirect = errors.New("Exchange answered 451 with an X-MS-Location that is none of the gateway's upstreams")
