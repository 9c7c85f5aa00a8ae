package seg

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestParseAutodiscoverJSON(t *testing.T) {
	for _, tc := range []struct {
		target, email, protocol string
		ok                      bool
	}{
		{"/autodiscover/autodiscover.json?Email=alice@example.com&Protocol=ActiveSync&RedirectCount=1", "alice@example.com", "ActiveSync", true},
		{"/Autodiscover/Autodiscover.json?email=alice%40example.com&protocol=activesync", "alice@example.com", "activesync", true},
		{"/autodiscover/autodiscover.json/v1.0/alice@example.com?Protocol=AutodiscoverV1", "alice@example.com", "AutodiscoverV1", true},
		{"/autodiscover/autodiscover.json/V1.0/alice%40example.com?Protocol=Ews", "alice@example.com", "Ews", true},
		{"/autodiscover/autodiscover.json?Protocol=ActiveSync", "", "", false},                                 // no address
		{"/autodiscover/autodiscover.json?Email=alice&Protocol=ActiveSync", "", "", false},                     // no domain
		{"/autodiscover/autodiscover.json?Email=@example.com&Protocol=ActiveSync", "", "", false},              // no local part
		{"/autodiscover/autodiscover.json?Email=alice@example.com", "", "", false},                             // no protocol
		{"/autodiscover/autodiscover.json?Email=a@x&Email=b@x&Protocol=ActiveSync", "", "", false},             // twice
		{"/autodiscover/autodiscover.json?Email=a@x&Protocol=ActiveSync&protocol=Ews", "", "", false},          // twice, another case
		{"/autodiscover/autodiscover.json?Email=a%0d%0aX:%20y@x&Protocol=ActiveSync", "", "", false},           // control characters
		{"/autodiscover/autodiscover.json?Email=a@x;Protocol=ActiveSync", "", "", false},                       // bad query
		{"/autodiscover/autodiscover.json?Email=" + strings.Repeat("a", 320) + "@x&Protocol=A", "", "", false}, // too long
	} {
		r := httptest.NewRequest("GET", tc.target, nil)
		q, err := parseAutodiscoverJSON(r)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.target, err)
			continue
		}
		if err != nil {
			if !errors.Is(err, errBadAutodiscoverJSON) {
				t.Errorf("%s: %v is not errBadAutodiscoverJSON", tc.target, err)
			}
			continue
		}
		if q.Email != tc.email || q.Protocol != tc.protocol {
			t.Errorf("%s: %+v", tc.target, q)
		}
	}
	for p, want := range map[string]bool{
		"/autodiscover/autodiscover.json":                 true,
		"/AUTODISCOVER/AUTODISCOVER.JSON":                 true,
		"/autodiscover/autodiscover.json/v1.0/a@x":        true,
		"/autodiscover/autodiscover.json/v1.0/":           false,
		"/autodiscover/autodiscover.json/v1.0/a@x/mapi":   false, // ProxyShell's shape
		"/autodiscover/autodiscover.json/../../mapi/nspi": false,
		"/autodiscover/autodiscover.jsonx":                false,
		"/autodiscover/autodiscover.js":                   false,
	} {
		if isAutodiscoverJSONPath(p) != want {
			t.Errorf("isAutodiscoverJSONPath(%q) = %v", p, !want)
		}
	}
}

// FuzzParseAutodiscoverJSON: any request line parses or is refused with
// errBadAutodiscoverJSON; an accepted address is one, without control
// characters, and nothing the client sent is echoed but letters and digits.
func FuzzParseAutodiscoverJSON(f *testing.F) {
	for _, s := range []string{
		"/autodiscover/autodiscover.json?Email=alice@example.com&Protocol=ActiveSync",
		"/autodiscover/autodiscover.json/v1.0/alice@example.com?Protocol=AutodiscoverV1",
		"/autodiscover/autodiscover.json?@evil.example/mapi/nspi/?&Email=autodiscover/autodiscover.json%3F@evil.example",
		"/autodiscover/autodiscover.json?Email=a%00@x&Protocol=%E2%80%AE",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \t\r\n#") {
			return
		}
		r, err := newTestRequest(target)
		if err != nil || !isAutodiscoverJSONPath(r.URL.Path) {
			return
		}
		q, err := parseAutodiscoverJSON(r)
		if err != nil {
			if !errors.Is(err, errBadAutodiscoverJSON) {
				t.Fatalf("%q: %v", target, err)
			}
			return
		}
		if !strings.Contains(q.Email, "@") || strings.ContainsFunc(q.Email, isControl) || q.Protocol == "" {
			t.Fatalf("%q: accepted %+v", target, q)
		}
		if a := alphanumeric(q.Protocol); strings.ContainsAny(a, "'\"\\<>&") || len(a) > 64 {
			t.Fatalf("echo %q", a)
		}
	})
}

// newTestRequest is httptest.NewRequest without its panic on a bad target.
func newTestRequest(target string) (r *http.Request, err error) {
	defer func() {
		if recover() != nil {
			err = errors.New("bad target")
		}
	}()
	return httptest.NewRequest("GET", target, nil), nil
}
