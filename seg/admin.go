package seg

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/segkcd/segkcd/internal/redact"
	"github.com/segkcd/segkcd/internal/sid"
	"github.com/segkcd/segkcd/kerberos"
)

// Admin is the gateway's administration API, an http.Handler for a
// listener of its own (examples/gateway binds it to loopback unless told
// otherwise). JSON in and out:
//
//	GET    /healthz                       200 while the process serves
//	GET    /readyz                        200, or 503 with the reason (Ready)
//	GET    /metrics                       Prometheus (Metrics)
//	GET    /v1/policy/devices/{id}        what the policy decides for a device, and why
//	                                      (?user=&type=&agent=&version= fill in the request)
//	GET    /v1/policy/users/{user}        the user's devices known to the policy, each decided
//	GET    /v1/policy/unresolved          the policy's user entries that name no account
//	GET    /v1/tickets                    ticket cache counters
//	DELETE /v1/tickets/{user}             forget a user's ticket (after a password or group change)
//	GET    /v1/redirects                  accounts mapped to another upstream by a 451
//	DELETE /v1/redirects                  forget all of them
//	DELETE /v1/redirects/{user}           forget one
//
// A {user} (and ?user=) is an account's SID or any name of it, which the
// directory resolves to its SID (Names.Accounts); per-user state is keyed by
// SID, so two names of one account reach the same entry and a name never
// reaches another account's. A name that names no account is 404.
//
//	GET    /v1/debug/devices              devices logged step by step
//	PUT    /v1/debug/devices/{id}         start logging a device step by step
//	DELETE /v1/debug/devices/{id}         stop
//	GET    /v1/roll                       the ASA roll's state (Roll)
//
// The fields that are nil leave their endpoints answering 404.
type Admin struct {
	// Token, when set, is required as "Authorization: Bearer <Token>" on
	// every endpoint but /healthz.
	Token string
	// Names resolves the {user} of the per-user routes to an account's
	// SID (give the gateway's, with its Accounts). Without it a {user} must
	// be a SID.
	Names   Names
	Policy  *Policy
	Tickets *kerberos.Cache
	// SPN is Exchange's, whose tickets DELETE /v1/tickets/{user} forgets.
	SPN       string
	Debug     *DebugDevices
	Redirects *Redirects
	Metrics   http.Handler
	// Ready reports whether the gateway can serve (service TGT, KDC,
	// Exchange); nil means always ready.
	Ready func(context.Context) error
	// Roll, when set, answers GET /v1/roll with its value as JSON: the
	// state of the ASA roll the gateway runs (examples/gateway gives a
	// deploy.Roller's Status, which holds no secret).
	Roll func() any

	once sync.Once
	mux  *http.ServeMux
}

// ServeHTTP implements http.Handler.
func (a *Admin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.once.Do(a.routes)
	if r.URL.Path != "/healthz" && a.Token != "" {
		got := r.Header.Get("Authorization")
		if subtle.ConstantTimeCompare([]byte(got), []byte("Bearer "+a.Token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="seg admin"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "a bearer token is required"})
			return
		}
	}
	a.mux.ServeHTTP(w, r)
}

func (a *Admin) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	m.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if a.Ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
			defer cancel()
			if err := a.Ready(ctx); err != nil {
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "error": err.Error()})
				return
			}
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	if a.Metrics != nil {
		m.Handle("GET /metrics", a.Metrics)
	}
	if a.Policy != nil {
		m.HandleFunc("GET /v1/policy/devices/{id}", a.policyDevice)
		m.HandleFunc("GET /v1/policy/users/{user}", a.policyUser)
		m.HandleFunc("GET /v1/policy/unresolved", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string][]Unresolved{"unresolved": append([]Unresolved{}, a.Policy.Unresolved()...)})
		})
	}
	if a.Tickets != nil {
		m.HandleFunc("GET /v1/tickets", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, a.Tickets.Stats())
		})
		m.HandleFunc("DELETE /v1/tickets/{user}", func(w http.ResponseWriter, r *http.Request) {
			if sid, ok := a.sidOf(w, r, r.PathValue("user")); ok {
				a.Tickets.InvalidateAccount(sid, a.SPN)
				w.WriteHeader(http.StatusNoContent)
			}
		})
	}
	if a.Redirects != nil {
		m.HandleFunc("GET /v1/redirects", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string][]Redirect{"redirects": a.Redirects.List()})
		})
		m.HandleFunc("DELETE /v1/redirects", func(w http.ResponseWriter, r *http.Request) {
			a.Redirects.Clear("")
			w.WriteHeader(http.StatusNoContent)
		})
		m.HandleFunc("DELETE /v1/redirects/{user}", func(w http.ResponseWriter, r *http.Request) {
			if sid, ok := a.sidOf(w, r, r.PathValue("user")); ok {
				a.Redirects.Clear(sid)
				w.WriteHeader(http.StatusNoContent)
			}
		})
	}
	if a.Roll != nil {
		m.HandleFunc("GET /v1/roll", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, a.Roll())
		})
	}
	if a.Debug != nil {
		m.HandleFunc("GET /v1/debug/devices", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string][]string{"devices": a.Debug.List()})
		})
		m.HandleFunc("PUT /v1/debug/devices/{id}", func(w http.ResponseWriter, r *http.Request) {
			a.Debug.Enable(r.PathValue("id"))
			w.WriteHeader(http.StatusNoContent)
		})
		m.HandleFunc("DELETE /v1/debug/devices/{id}", func(w http.ResponseWriter, r *http.Request) {
			a.Debug.Disable(r.PathValue("id"))
			w.WriteHeader(http.StatusNoContent)
		})
	}
	a.mux = m
}

// deviceAnswer is the policy's view of one device.
type deviceAnswer struct {
	DeviceID string       `json:"device_id"`
	Known    bool         `json:"known"`
	State    *DeviceState `json:"state,omitempty"`
	Decision Decision     `json:"decision"`
}

func (a *Admin) policyDevice(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	id := r.PathValue("id")
	in := PolicyInput{User: q.Get("user"), DeviceID: id, DeviceType: q.Get("type"), UserAgent: q.Get("agent"), ProtocolVersion: q.Get("version")}
	rules, _ := a.Policy.Rules()
	ans := deviceAnswer{DeviceID: id}
	if rules != nil {
		if st, ok := a.Policy.deviceState(id); ok {
			ans.Known, ans.State = true, &st
			if in.User == "" {
				in.User = st.User
			}
		}
	}
	if in.User != "" {
		var ok bool
		if in.SID, ok = a.sidOf(w, r, in.User); !ok {
			return
		}
	}
	ans.Decision = a.Policy.Decide(in)
	writeJSON(w, http.StatusOK, ans)
}

func (a *Admin) policyUser(w http.ResponseWriter, r *http.Request) {
	user := r.PathValue("user")
	sid, ok := a.sidOf(w, r, user)
	if !ok {
		return
	}
	rules, loaded := a.Policy.Rules()
	out := struct {
		User    string         `json:"user"`
		Loaded  time.Time      `json:"policy_loaded"`
		Devices []deviceAnswer `json:"devices"`
		SID     string         `json:"sid"`
	}{User: user, SID: sid, Loaded: loaded, Devices: []deviceAnswer{}}
	if rules != nil {
		for id, st := range rules.Devices {
			if st.User == "" || a.Policy.enrolledSID(id) != sid {
				continue
			}
			st := st
			d := a.Policy.Decide(PolicyInput{SID: sid, User: user, DeviceID: id})
			out.Devices = append(out.Devices, deviceAnswer{DeviceID: id, Known: true, State: &st, Decision: d})
		}
	}
	sort.Slice(out.Devices, func(i, j int) bool { return out.Devices[i].DeviceID < out.Devices[j].DeviceID })
	writeJSON(w, http.StatusOK, out)
}

// sidOf is the SID of a {user}: a SID as written, else the account the
// directory names (Names). It answers 404 for a name of no account, 503
// when the directory could not be asked, and says whether to go on.
func (a *Admin) sidOf(w http.ResponseWriter, r *http.Request, user string) (string, bool) {
	if s, err := sid.Parse(user); err == nil {
		return s, true
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	acct, err := a.Names.Resolve(ctx, user)
	switch {
	case err == nil:
		return acct.SID, true
	case errors.Is(err, ErrBadName), errors.Is(err, ErrNoDirectory):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no account of the domain holds that name"})
	default:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the directory could not be asked: " + err.Error()})
	}
	return "", false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// Format prints the Admin without its token, for every verb: fmt prints
// every field, and the token opens the admin API.
func (a *Admin) Format(f fmt.State, verb rune) {
	type shown struct {
		Token     string
		Policy    *Policy
		Tickets   *kerberos.Cache
		SPN       string
		Debug     *DebugDevices
		Redirects *Redirects
		Metrics   http.Handler
	}
	redact.Format(f, verb, "seg.Admin", shown{Token: redact.String(a.Token), Policy: a.Policy, Tickets: a.Tickets,
		SPN: a.SPN, Debug: a.Debug, Redirects: a.Redirects, Metrics: a.Metrics})
}
