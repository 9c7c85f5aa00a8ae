package seg

import (
	"errors"
	"strings"
	"testing"
)

const autodiscoverDoc = `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">
  <Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006">
    <Culture>en:us</Culture>
    <User><DisplayName>Alice</DisplayName><EMailAddress>alice@corp.example.test</EMailAddress></User>
    <Action><Settings>
      <Server><Type>MobileSync</Type><Url>https://mail.corp.example.test/Microsoft-Server-ActiveSync</Url><Name>https://mail.corp.example.test/Microsoft-Server-ActiveSync</Name></Server>
      <Server><Type>CertEnroll</Type><Url>https://ca.corp.example.test/enroll</Url><Name/><ServerData>CertEnrollTemplate</ServerData></Server>
    </Settings></Action>
  </Response>
</Autodiscover>`

func TestRewriteAutodiscover(t *testing.T) {
	out, err := rewriteAutodiscoverDoc([]byte(autodiscoverDoc), "https://seg.example.test/Microsoft-Server-ActiveSync?a=1&b=2")
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if strings.Contains(s, "mail.corp.example.test") || strings.Count(s, "https://seg.example.test/Microsoft-Server-ActiveSync?a=1&amp;b=2") != 2 {
		t.Errorf("MobileSync not rewritten:\n%s", s)
	}
	if !strings.Contains(s, "https://ca.corp.example.test/enroll") || !strings.Contains(s, `xmlns="http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"`) {
		t.Errorf("other parts changed:\n%s", s)
	}
	for _, bad := range []string{"<Autodiscover>", "<a></b>", "<a>&bogus;</a>", "\x00"} {
		if _, err := rewriteAutodiscoverDoc([]byte(bad), "x"); !errors.Is(err, ErrBadAutodiscover) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// FuzzRewriteAutodiscover: any answer is rewritten or refused; a rewritten
// one is well-formed again and holds no MobileSync URL but ours.
func FuzzRewriteAutodiscover(f *testing.F) {
	f.Add([]byte(autodiscoverDoc))
	f.Add([]byte(`<Server><Type>MobileSync</Type><Url><![CDATA[https://x]]></Url></Server>`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		out, err := rewriteAutodiscoverDoc(doc, "https://gw/Microsoft-Server-ActiveSync")
		if err != nil {
			if !errors.Is(err, ErrBadAutodiscover) {
				t.Fatal(err)
			}
			return
		}
		if _, err := rewriteAutodiscoverDoc(out, "https://gw/Microsoft-Server-ActiveSync"); err != nil {
			t.Fatalf("our output does not parse: %v\n%q", err, out)
		}
	})
}
