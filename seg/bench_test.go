package seg_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/segkcd/segkcd/seg"
)

// BenchmarkProxyWarm is one device request through the handler with a
// cached ticket, to a backend that answers at once: the gateway's own cost
// per request (TLS to the device excluded, TLS to the backend included),
// bare, with metrics, with a device policy of 10,000 devices, and with both.
func BenchmarkProxyWarm(b *testing.B) {
	r := getRig(b)
	backend := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") }))
	defer backend.Close()
	target, _ := url.Parse(backend.URL)
	names := seg.Names{Realm: r.lab.Realm, NetBIOS: r.lab.Domain, Accounts: r.accounts}
	certs := &seg.CertificateAuth{Names: names, Revocation: &seg.CRL{Files: []string{r.crlPath}}}
	dev, err := r.cert(b, "alice@"+r.lab.DNSDomain, "", "")
	if err != nil {
		b.Fatal(err)
	}
	rules := &seg.PolicyRules{Rules: seg.PolicyChecks{RequireManaged: true, BlockCompromised: true, MailClients: []string{"^Apple-iPhone", "^Outlook"}},
		Block: seg.PolicyList{Devices: []string{"STOLEN"}, UserAgents: []string{"^EvilSync"}}, Devices: map[string]seg.DeviceState{}}
	for i := 0; i < 10000; i++ {
		rules.Devices[fmt.Sprintf("DEV%05d", i)] = seg.DeviceState{User: "alice", Managed: true}
	}
	for _, variant := range []string{"bare", "metrics", "policy", "metrics+policy"} {
		b.Run(variant, func(b *testing.B) {
			h := &seg.ProxyHandler{Upstreams: []*seg.Upstream{{URL: target, SPN: r.spn}}, Tickets: r.cache, Authenticate: certs.Authenticate, Names: names,
				Transport: &seg.UserPools{TLSClientConfig: backend.Client().Transport.(*http.Transport).TLSClientConfig},
				Logger:    slog.New(slog.NewJSONHandler(io.Discard, nil))}
			if variant == "metrics" || variant == "metrics+policy" {
				m, err := seg.NewMetrics(prometheus.NewRegistry())
				if err != nil {
					b.Fatal(err)
				}
				h.Metrics = m
			}
			if variant == "policy" || variant == "metrics+policy" {
				p := &seg.Policy{Names: names, Metrics: h.Metrics}
				if err := p.Set(rules); err != nil {
					b.Fatal(err)
				}
				h.Authorize = p.Authorize
			}
			req := httptest.NewRequest(http.MethodPost, "/Microsoft-Server-ActiveSync?Cmd=Sync&User=alice&DeviceId=DEV04711&DeviceType=iPhone", nil)
			req.Header.Set("User-Agent", "Apple-iPhone/1403.1")
			req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{dev.Cert}, VerifiedChains: [][]*x509.Certificate{{dev.Cert, r.ca.Cert}}}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatal(w.Code, w.Body.String())
				}
			}
		})
	}
}
