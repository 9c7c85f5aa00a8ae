package winrstest

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/segkcd/segkcd/internal/wsman"
)

// FuzzQuote: whatever a value holds, wsman.Quote makes it one string
// literal that PowerShell's quoting rules (modelled by the tokenizer) read
// back unchanged, with nothing after it that could run.
// Seed corpus: testdata/fuzz/FuzzQuote.
func FuzzQuote(f *testing.F) {
	for _, s := range []string{"", "plain", "it's", "'; Remove-Item C:\\ -Recurse; '", "\u2019; calc; \u2018", "$(calc)", "`n", "a\u201bb\u201ac", "''''"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q, err := wsman.Quote(s)
		if strings.ContainsRune(s, 0) || !utf8.ValidString(s) {
			if err == nil {
				t.Fatal("unquotable value accepted")
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		toks, err := tokenize("Write-Value " + q)
		if err != nil {
			t.Fatalf("%q: %v", q, err)
		}
		if len(toks) != 3 || toks[1].kind != tString || toks[1].val != s || toks[2].kind != tEOF {
			t.Fatalf("value %q quoted as %q reads back as %+v", s, q, toks)
		}
	})
}

// FuzzCLIXML: the parser never panics, and reads back any error message
// the way powershell.exe serializes it. Seed corpus: testdata/fuzz/FuzzCLIXML.
func FuzzCLIXML(f *testing.F) {
	f.Add("Add-LocalGroupMember: CORP\\svc is already a member of group IIS_IUSRS.")
	f.Add("line one\nline <two> & _x0041_")
	f.Add("#< CLIXML")
	f.Fuzz(func(t *testing.T, msg string) {
		wsman.ParseCLIXML(msg) // arbitrary stderr: must not panic
		if !utf8.ValidString(msg) || strings.ContainsAny(msg, "\r\x00") || strings.Contains(msg, "_x") {
			return
		}
		for _, r := range msg {
			if r < 0x20 && r != '\n' && r != '\t' || r == 0xFFFD || r >= 0xD800 && r < 0xE000 || r > 0xFFFF {
				return // not representable as XML 1.0 character data
			}
		}
		got := wsman.ParseCLIXML(clixml(msg))
		if got != strings.TrimSpace(msg) {
			t.Fatalf("round trip: %q -> %q", msg, got)
		}
	})
}
