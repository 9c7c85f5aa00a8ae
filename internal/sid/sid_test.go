package sid

import (
	"bytes"
	"errors"
	"testing"
)

func TestParseEncodeDecode(t *testing.T) {
	for _, s := range []string{"S-1-5-21-3623811015-3361044348-30300820-1013", "S-1-5-32-544", "S-1-1-0", "S-1-5", "S-1-281474976710655-4294967295"} {
		got, err := Parse(s)
		if err != nil || got != s {
			t.Fatalf("Parse(%q) = %q %v", s, got, err)
		}
		b, err := Encode(s)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Decode(b)
		if err != nil || back != s {
			t.Fatalf("%q: %x decodes to %q %v", s, b, back, err)
		}
	}
	// One spelling only: every other is malformed.
	for _, s := range []string{"", "S-1-", "s-1-5-21-1", "S-1-05-21", "S-1-5-021-1", "S-1-0x5-21", "S-2-5-21", "S-1-5-21-", "S-1-5--1",
		"S-1-5-21-4294967296", "S-1-281474976710656-1", "S-1-5-21-+1", "S-1-5-21-1 ", "S-1-5-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16"} {
		if got, err := Parse(s); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q) = %q %v", s, got, err)
		}
		if _, err := Encode(s); !errors.Is(err, ErrMalformed) {
			t.Errorf("Encode(%q): %v", s, err)
		}
	}
	b, _ := Encode("S-1-5-21-1-2")
	if !bytes.Equal(b, []byte{1, 3, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0}) {
		t.Errorf("Encode: %x", b)
	}
}
