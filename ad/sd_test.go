package ad_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/segkcd/segkcd/ad"
)

// sambaRBCD is the descriptor samba-tool delegation add-principal wrote
// for one principal on the lab (Samba 4.22), byte for byte.
const sambaRBCD = "01000480140000000000000000000000240000000102000000000005200000002002000004002c000100000000002400ff010f000105000000000005150000009171bb8af054cd67eead6fe653040000"

func TestSecurityDescriptorRoundTrip(t *testing.T) {
	b, _ := hex.DecodeString(sambaRBCD)
	sd, err := ad.ParseSecurityDescriptor(b)
	if err != nil {
		t.Fatal(err)
	}
	if sd.Owner != "S-1-5-32-544" || len(sd.DACL) != 1 || sd.DACL[0].Mask != ad.RBCDAccessMask || sd.DACL[0].SID != "S-1-5-21-2327540113-1741509872-3866078702-1107" {
		t.Fatalf("%+v", sd)
	}
	out, err := sd.Marshal()
	if err != nil || !bytes.Equal(out, b) {
		t.Fatalf("Samba's descriptor written back differs:\n%x\n%x", out, b)
	}
	for _, bad := range [][]byte{nil, b[:19], append([]byte{2}, b[1:]...), b[:len(b)-1]} {
		if _, err := ad.ParseSecurityDescriptor(bad); !errors.Is(err, ad.ErrMalformedSD) {
			t.Errorf("%x: %v", bad, err)
		}
	}
	if _, err := ad.EncodeSID("S-1-5-21-x"); err == nil {
		t.Fatal("bad SID encoded")
	}
}

// FuzzParseSecurityDescriptor feeds arbitrary bytes to the parser (the
// attribute comes from the directory, which anyone with write access to
// the account fills): never a panic, and whatever parses writes back to
// bytes that parse to the same. Seed corpus: testdata/fuzz/FuzzParseSecurityDescriptor.
func FuzzParseSecurityDescriptor(f *testing.F) {
	b, _ := hex.DecodeString(sambaRBCD)
	f.Add(b)
	f.Fuzz(func(t *testing.T, in []byte) {
		sd, err := ad.ParseSecurityDescriptor(in)
		if err != nil {
			if !errors.Is(err, ad.ErrMalformedSD) {
				t.Fatalf("error outside ErrMalformedSD: %v", err)
			}
			return
		}
		out, err := sd.Marshal()
		if err != nil {
			return // a DACL too large to write back, or a SID it cannot encode
		}
		again, err := ad.ParseSecurityDescriptor(out)
		if err != nil {
			t.Fatalf("our own output does not parse: %v", err)
		}
		if again.Owner != sd.Owner || again.Group != sd.Group || len(again.DACL) != len(sd.DACL) {
			t.Fatalf("round trip changed %+v into %+v", sd, again)
		}
		for i := range sd.DACL {
			if again.DACL[i].SID != sd.DACL[i].SID || again.DACL[i].Mask != sd.DACL[i].Mask || again.DACL[i].Type != sd.DACL[i].Type {
				t.Fatalf("ACE %d: %+v became %+v", i, sd.DACL[i], again.DACL[i])
			}
		}
	})
}
