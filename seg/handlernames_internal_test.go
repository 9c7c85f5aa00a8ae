package seg

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// TestAuthenticatorsTakeTheHandlersNames (issue 29): an authenticator whose
// Names is the zero value uses its ProxyHandler's; one of its own keeps it.
func TestAuthenticatorsTakeTheHandlersNames(t *testing.T) {
	h := &Names{Realm: "CORP.EXAMPLE.TEST", NetBIOS: "CORP"}
	ctx := context.WithValue(context.Background(), namesKey{}, h)
	var zero Names
	if got := namesFor(ctx, &zero); got != h {
		t.Errorf("zero Names: %+v, want the handler's", got)
	}
	own := &Names{Realm: "OTHER.TEST"}
	if got := namesFor(ctx, own); got != own {
		t.Errorf("own Names: %+v, want its own", got)
	}
	if got := namesFor(context.Background(), &zero); got != &zero {
		t.Error("without a handler, the zero Names is its own")
	}
	// Through a ProxyHandler: the authenticator sees the handler's Names.
	var seen *Names
	up, _ := url.Parse("https://mail.corp.example.test")
	p := &ProxyHandler{Upstreams: []*Upstream{{URL: up}}, Tickets: fakeTickets{},
		Names: *h, Logger: discardLogger(), FailedLoginDelay: -1,
		Authenticate: func(r *http.Request) (*Identity, error) {
			seen = namesFor(r.Context(), &Names{})
			return nil, ErrNoCredentials
		}}
	p.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/Microsoft-Server-ActiveSync?Cmd=Sync&User=alice&DeviceId=d&DeviceType=t", nil))
	if seen == nil || seen.Realm != h.Realm {
		t.Errorf("the authenticator saw %+v", seen)
	}
}
