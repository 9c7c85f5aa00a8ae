package seg

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/segkcd/segkcd/kerberos"
)

// Metrics are the gateway's Prometheus metrics. NewMetrics registers them
// on the registry the caller passes (never the global one); ProxyHandler,
// Policy and the methods below feed them. A nil *Metrics records nothing.
type Metrics struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	longPolls prometheus.Gauge
	parkedNow prometheus.Gauge
	policy    *prometheus.CounterVec
	kdc       *prometheus.HistogramVec
	up        *prometheus.GaugeVec
	redirects prometheus.Counter
	crlStale  *prometheus.CounterVec
	certMaps  *prometheus.CounterVec
	reg       prometheus.Registerer
}

// NewMetrics makes the metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "seg_requests_total",
			Help: "Device requests by route, ActiveSync command and HTTP status."}, []string{"route", "cmd", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "seg_request_duration_seconds",
			Help:    "Time to answer a device request (long polls included, up to an hour).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600}},
			[]string{"route", "cmd"}),
		longPolls: prometheus.NewGauge(prometheus.GaugeOpts{Name: "seg_long_polls_active",
			Help: "Ping and Sync requests being held open now."}),
		parkedNow: prometheus.NewGauge(prometheus.GaugeOpts{Name: "seg_long_polls_parked",
			Help: "Long polls held open now that are parked: their connections on the poller, with no goroutine or buffer (of seg_long_polls_active)."}),
		policy: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "seg_policy_decisions_total",
			Help: "Device policy decisions: allow, block, or monitor (would block, let through), by rule."}, []string{"decision", "rule"}),
		kdc: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "seg_kdc_exchange_seconds",
			Help:    "Exchanges with a KDC by address, protocol and result (ok, or error: no answer).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 3}}, []string{"kdc", "proto", "result"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "seg_upstream_up",
			Help: "1 when the last health probe of an upstream succeeded."}, []string{"upstream"}),
		redirects: prometheus.NewCounter(prometheus.CounterOpts{Name: "seg_redirects_total",
			Help: "451 answers whose user was mapped to another upstream."}),
		crlStale: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "seg_crl_stale_total",
			Help: "Certificate logins checked against a CRL past its nextUpdate, by action (refused, or accepted with CRL.AllowStale)."},
			[]string{"action"}),
		certMaps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "seg_certificate_mappings_total",
			Help: "Device certificates mapped to their accounts, by result: strong_sid, strong_alt_security_identities, weak_served (no SID, let in by compatibility or off), and the refusals sid_mismatch, no_strong_mapping, predates_account, malformed."},
			[]string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.longPolls, m.parkedNow, m.policy, m.kdc, m.up, m.redirects, m.crlStale, m.certMaps} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Cache exports the counters of a ticket cache: hits, misses, KDC
// exchanges and their errors, refreshes (failed, late, waiting), evictions,
// entries.
func (m *Metrics) Cache(c *kerberos.Cache) error {
	if m == nil {
		return nil
	}
	counters := map[string]struct {
		help string
		get  func(kerberos.CacheStats) int64
	}{
		"seg_ticket_cache_hits_total":          {"Tickets served from the cache.", func(s kerberos.CacheStats) int64 { return s.Hits }},
		"seg_ticket_cache_negative_hits_total": {"KDC refusals served from the cache.", func(s kerberos.CacheStats) int64 { return s.NegativeHits }},
		"seg_ticket_cache_misses_total":        {"Requests that waited for a KDC exchange (their own or a shared one).", func(s kerberos.CacheStats) int64 { return s.Misses }},
		"seg_ticket_cache_exchanges_total":     {"S4U2Self+S4U2Proxy exchanges made.", func(s kerberos.CacheStats) int64 { return s.Exchanges }},
		"seg_ticket_cache_errors_total":        {"Exchanges that failed.", func(s kerberos.CacheStats) int64 { return s.Errors }},
		"seg_ticket_cache_refreshes_total":     {"Tickets renewed ahead of their end.", func(s kerberos.CacheStats) int64 { return s.Refreshes }},
		"seg_ticket_cache_evictions_total":     {"Entries dropped for room.", func(s kerberos.CacheStats) int64 { return s.Evictions }},
		"seg_ticket_cache_refresh_errors_total": {"Refreshes ahead that failed (the ticket in hand is still served).",
			func(s kerberos.CacheStats) int64 { return s.RefreshErrors }},
		"seg_ticket_cache_refreshes_late_total": {"Refreshes dropped because their ticket reached its margin while they waited for a slot: the KDC answers slower than tickets come due.",
			func(s kerberos.CacheStats) int64 { return s.RefreshesLate }},
	}
	for name, v := range counters {
		get := v.get
		if err := m.reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: v.help},
			func() float64 { return float64(get(c.Stats())) })); err != nil {
			return err
		}
	}
	if err := m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "seg_ticket_cache_refreshes_waiting",
		Help: "Refreshes ahead waiting for a slot (kerberos.Cache.MaxRefreshes)."}, func() float64 { return float64(c.Stats().RefreshesWaiting) })); err != nil {
		return err
	}
	return m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "seg_ticket_cache_entries",
		Help: "Tickets and refusals in the cache."}, func() float64 { return float64(c.Stats().Entries) }))
}

// KDC times every exchange of t with its KDCs. Call it before t's first use:
// it sets t.Observe.
func (m *Metrics) KDC(t *kerberos.Transport) {
	if m == nil {
		return
	}
	t.Observe = func(kdc, proto string, took time.Duration, err error) {
		result := "ok"
		if err != nil {
			result = "error"
		}
		m.kdc.WithLabelValues(kdc, proto, result).Observe(took.Seconds())
	}
}

func (m *Metrics) request(route, cmd string, code int, took time.Duration) {
	if m == nil {
		return
	}
	if cmd == "" {
		cmd = "none"
	}
	m.requests.WithLabelValues(route, cmd, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(route, cmd).Observe(took.Seconds())
}

func (m *Metrics) longPoll(delta float64) {
	if m != nil {
		m.longPolls.Add(delta)
	}
}

func (m *Metrics) parked(delta float64) {
	if m != nil {
		m.parkedNow.Add(delta)
	}
}

func (m *Metrics) decision(d Decision, monitor bool) {
	if m == nil {
		return
	}
	kind := "allow"
	switch {
	case d.Allow:
	case monitor:
		kind = "monitor"
	default:
		kind = "block"
	}
	m.policy.WithLabelValues(kind, d.Rule).Inc()
}

func (m *Metrics) upstream(host string, up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.up.WithLabelValues(host).Set(v)
}

func (m *Metrics) redirected() {
	if m != nil {
		m.redirects.Inc()
	}
}

func (m *Metrics) staleCRL(accepted bool) {
	if m == nil {
		return
	}
	action := "refused"
	if accepted {
		action = "accepted"
	}
	m.crlStale.WithLabelValues(action).Inc()
}

func (m *Metrics) certMapping(result string) {
	if m == nil {
		return
	}
	m.certMaps.WithLabelValues(result).Inc()
}
