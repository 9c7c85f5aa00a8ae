package seg_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/segkcd/segkcd/seg"
)

// BenchmarkProxyWarm is one device request through the handler with a
// cached ticket, to a backend that answers at once: the gateway's own cost
// per request (TLS to the device excluded, TLS to the backend included).
func BenchmarkProxyWarm(b *testing.B) {
	r := getRig(b)
	backend := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") }))
	defer backend.Close()
	target, _ := url.Parse(backend.URL)
	names := seg.Names{Realm: r.lab.Realm, NetBIOS: r.lab.Domain}
	certs := &seg.CertificateAuth{Names: names, Revocation: &seg.CRL{Files: []string{r.crlPath}}}
	h := &seg.ProxyHandler{Upstreams: []*seg.Upstream{{URL: target, SPN: r.spn}}, Tickets: r.cache, Authenticate: certs.Authenticate, Names: names,
		Transport: &seg.UserPools{TLSClientConfig: backend.Client().Transport.(*http.Transport).TLSClientConfig},
		Logger:    slog.New(slog.NewJSONHandler(io.Discard, nil))}
	dev, err := r.ca.Device("alice@"+r.lab.DNSDomain, "", "")
	if err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "/Microsoft-Server-ActiveSync?Cmd=Sync&User=alice&DeviceId=B1&DeviceType=T", nil)
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
}
