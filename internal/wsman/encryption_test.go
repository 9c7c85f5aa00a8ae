package wsman

import (
	"bytes"
	"errors"
	"testing"

	"github.com/segkcd/segkcd/internal/ntlm"
)

// sessions returns an authenticated client and server session pair.
func sessions(t testing.TB) (client, server Sealer) {
	srv := &ntlm.Server{DomainName: "CORP", ComputerName: "CAS1",
		NTHash: func(u, d string) ([]byte, bool) { return ntlm.NTHash("pw"), true }}
	c := &ntlm.Client{User: "admin", Domain: "CORP", Password: "pw"}
	p, ch, err := srv.Challenge(c.Negotiate())
	if err != nil {
		t.Fatal(err)
	}
	msg, cs, err := c.Authenticate(ch)
	if err != nil {
		t.Fatal(err)
	}
	_, ss, err := p.Accept(msg)
	if err != nil {
		t.Fatal(err)
	}
	return NTLMSealer(cs), NTLMSealer(ss)
}

func seal(t testing.TB, s Sealer, msg string) []byte {
	b, err := SealMessage(s, []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSealRoundTrip(t *testing.T) {
	cs, ss := sessions(t)
	// The ciphertext may contain the boundary: the Length, not a search, cuts it.
	for _, msg := range []string{"<s:Envelope/>", "x--Encrypted Boundary--\r\n--Encrypted Boundary\r\ny", ""} {
		body := seal(t, cs, msg)
		got, err := UnsealMessage(ss, body)
		if err != nil || string(got) != msg {
			t.Fatalf("%q: %q %v", msg, got, err)
		}
	}
	// A changed byte fails the signature; a cut body fails the layout.
	body := seal(t, cs, "<s:Envelope/>")
	body[len(body)-30] ^= 1
	if _, err := UnsealMessage(ss, body); !errors.Is(err, ErrEncryption) {
		t.Fatalf("tampered: %v", err)
	}
	cs, ss = sessions(t)
	body = seal(t, cs, "<s:Envelope/>")
	if _, err := UnsealMessage(ss, body[:len(body)-3]); !errors.Is(err, ErrEncryption) {
		t.Fatalf("truncated: %v", err)
	}
}

// FuzzUnseal feeds a host's reply body to UnsealMessage: it must refuse or
// decrypt, never panic, and never return what the signature did not cover.
func FuzzUnseal(f *testing.F) {
	cs, _ := sessions(f)
	f.Add(seal(f, cs, "<s:Envelope/>"))
	f.Fuzz(func(t *testing.T, body []byte) {
		_, ss := sessions(t)
		if msg, err := UnsealMessage(ss, body); err == nil && !bytes.Contains(body, []byte("Length=")) {
			t.Fatalf("unsealed %q without a Length", msg)
		}
	})
}
