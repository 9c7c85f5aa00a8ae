package ntlm

import (
	"bytes"
	"testing"
)

// The seed corpora in testdata/fuzz hold real messages: the MS-NLMP
// example, our own, and those pywinrm's ntlm-auth sent to the test host.

// FuzzChallenge feeds a server's CHALLENGE_MESSAGE to the client: it must
// refuse or answer, never panic, and never answer NTLMv1.
func FuzzChallenge(f *testing.F) {
	f.Fuzz(func(t *testing.T, msg []byte) {
		c := &Client{User: "admin", Domain: "CORP", Password: "pw"}
		c.Negotiate()
		out, _, err := c.Authenticate(msg)
		if err != nil {
			return
		}
		a, err := parseAuthenticate(out)
		if err != nil {
			t.Fatalf("our AUTHENTICATE does not parse: %v", err)
		}
		if len(a.nt) <= 24 {
			t.Fatalf("answered with an NT response of %d bytes", len(a.nt))
		}
	})
}

// FuzzAuthenticate feeds a client's AUTHENTICATE_MESSAGE to the server.
// Only a message made with the right password may be accepted.
func FuzzAuthenticate(f *testing.F) {
	srv := testServer()
	f.Fuzz(func(t *testing.T, msg []byte) {
		c := &Client{User: "admin", Domain: "CORP", Password: "Adm1n-pw!"}
		p, _, err := srv.Challenge(c.Negotiate())
		if err != nil {
			t.Fatal(err)
		}
		if id, _, err := p.Accept(msg); err == nil {
			// The server challenge is fresh random: no stored message can pass.
			t.Fatalf("accepted a message made before the challenge: %+v", id)
		}
	})
}

// FuzzNegotiate feeds a NEGOTIATE_MESSAGE to the server.
func FuzzNegotiate(f *testing.F) {
	srv := testServer()
	f.Fuzz(func(t *testing.T, msg []byte) {
		_, ch, err := srv.Challenge(msg)
		if err != nil {
			return
		}
		if !bytes.HasPrefix(ch, signature) {
			t.Fatal("challenge without a signature")
		}
		if _, err := ParseChallenge(ch); err != nil {
			t.Fatalf("our challenge does not parse: %v", err)
		}
	})
}
