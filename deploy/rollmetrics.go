package deploy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RegisterMetrics registers the Roller's Status with reg, read at each
// scrape, labelled with the ASA:
//
//	segkcd_asa_roll_last_roll_timestamp_seconds   AD's password last set (the last roll, by any replica)
//	segkcd_asa_roll_next_roll_timestamp_seconds   when it is due again
//	segkcd_asa_roll_last_check_timestamp_seconds  this replica's last check
//	segkcd_asa_roll_next_check_timestamp_seconds  its next
//	segkcd_asa_roll_last_check_ok                 1 when the last check succeeded, else 0
//	segkcd_asa_roll_last_error_timestamp_seconds  its last failed check
//	segkcd_asa_rolls_total                        rolls this replica finished
//	segkcd_asa_roll_failures_total                checks of this replica that failed
//	segkcd_asa_roll_held_since_timestamp_seconds  since when a due roll is held off by another's claim or a foreign note
//
// A time not known yet (no check made) is left out, and held_since while
// nothing holds a due roll off. Alert on time() - last_roll > every + a day,
// on last_check_ok == 0, and on time() - held_since > 2 × lease (a real
// roll holds its claim at most one lease).
func (r *Roller) RegisterMetrics(reg prometheus.Registerer) error {
	labels := []string{"asa"}
	return reg.Register(&rollCollector{r: r,
		lastRoll:  prometheus.NewDesc("segkcd_asa_roll_last_roll_timestamp_seconds", "When AD's ASA password was last set: the last roll, by any replica.", labels, nil),
		nextRoll:  prometheus.NewDesc("segkcd_asa_roll_next_roll_timestamp_seconds", "When the ASA password is due to be rolled again.", labels, nil),
		lastCheck: prometheus.NewDesc("segkcd_asa_roll_last_check_timestamp_seconds", "When this replica last checked whether a roll is due.", labels, nil),
		nextCheck: prometheus.NewDesc("segkcd_asa_roll_next_check_timestamp_seconds", "When this replica checks next.", labels, nil),
		ok:        prometheus.NewDesc("segkcd_asa_roll_last_check_ok", "1 when this replica's last roll check succeeded, else 0.", labels, nil),
		lastError: prometheus.NewDesc("segkcd_asa_roll_last_error_timestamp_seconds", "When a roll check of this replica last failed.", labels, nil),
		rolls:     prometheus.NewDesc("segkcd_asa_rolls_total", "ASA rolls this replica finished (or took over and finished).", labels, nil),
		failures:  prometheus.NewDesc("segkcd_asa_roll_failures_total", "Roll checks of this replica that failed.", labels, nil),
		heldSince: prometheus.NewDesc("segkcd_asa_roll_held_since_timestamp_seconds", "Since when a roll that is due has been held off by another's unfinished claim or a foreign note (AD's password unchanged), as this replica saw it.", labels, nil),
	})
}

// rollCollector reads a Roller's Status at each scrape.
type rollCollector struct {
	r                                                                                   *Roller
	lastRoll, nextRoll, lastCheck, nextCheck, ok, lastError, rolls, failures, heldSince *prometheus.Desc
}

func (c *rollCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lastRoll, c.nextRoll, c.lastCheck, c.nextCheck, c.ok, c.lastError, c.rolls, c.failures, c.heldSince} {
		ch <- d
	}
}

func (c *rollCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.r.Status()
	stamp := func(d *prometheus.Desc, t time.Time) {
		if !t.IsZero() {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(t.UnixNano())/1e9, st.ASA)
		}
	}
	stamp(c.lastRoll, st.LastRoll)
	stamp(c.nextRoll, st.NextRoll)
	stamp(c.lastCheck, st.LastCheck)
	stamp(c.nextCheck, st.NextCheck)
	stamp(c.lastError, st.LastErrorAt)
	stamp(c.heldSince, st.HeldSince)
	if !st.LastCheck.IsZero() {
		ok := 0.0
		if st.OK {
			ok = 1
		}
		ch <- prometheus.MustNewConstMetric(c.ok, prometheus.GaugeValue, ok, st.ASA)
	}
	ch <- prometheus.MustNewConstMetric(c.rolls, prometheus.CounterValue, float64(st.Rolls), st.ASA)
	ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(st.Failures), st.ASA)
}
