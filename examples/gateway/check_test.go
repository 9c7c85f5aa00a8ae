package main

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"strings"
	"testing"
	"time"
)

// TestCheckValidity: -check's reading of a certificate's life: fine, a
// warning within 30 days of its end, a failure outside its life.
func TestCheckValidity(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	k := &checker{now: now}
	for _, tc := range []struct {
		from, to time.Time
		want     string // prefix of the detail, or "error"
	}{
		{now.Add(-time.Hour), now.Add(90 * 24 * time.Hour), `"gw" valid until 2027-03-05 (90 days)`},
		{now.Add(-time.Hour), now.Add(10 * 24 * time.Hour), `WARN "gw" expires on 2026-12-15, in 10 days`},
		{now.Add(-48 * time.Hour), now.Add(-time.Hour), "error"},
		{now.Add(time.Hour), now.Add(48 * time.Hour), "error"},
	} {
		d, err := k.validity(&x509.Certificate{Subject: pkix.Name{CommonName: "gw"}, NotBefore: tc.from, NotAfter: tc.to})
		switch {
		case tc.want == "error" && err == nil:
			t.Errorf("%v-%v: %q, want an error", tc.from, tc.to, d)
		case tc.want != "error" && (err != nil || !strings.HasPrefix(d, tc.want)):
			t.Errorf("%v-%v: %q %v, want %q", tc.from, tc.to, d, err, tc.want)
		}
	}
}
