package ntlm

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
	"time"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The MS-NLMP 4.2.4 example: User/Domain/Password, server challenge
// 0123456789abcdef, client challenge aa.., random session key 55.., time 0.
const (
	specTargetInfo = "02000c0044006f006d00610069006e0001000c0053006500720076006500720000000000"
	specFlags      = 0xe28a8233
)

type fixedReader struct{ b []byte }

func (r *fixedReader) Read(p []byte) (int, error) {
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

func specChallenge(t *testing.T) []byte {
	b := newBuilder(2, 56)
	b.put(12, utf16le("Server"))
	var flags [4]byte
	flags[0], flags[1], flags[2], flags[3] = 0x33, 0x82, 0x8a, 0xe2
	copy(b.head[20:], flags[:])
	copy(b.head[24:], unhex(t, "0123456789abcdef"))
	b.put(40, unhex(t, specTargetInfo))
	return b.bytes()
}

func specClient(t *testing.T) *Client {
	return &Client{User: "User", Domain: "Domain", Password: "Password", Workstation: "COMPUTER",
		Rand: &fixedReader{append(bytes.Repeat([]byte{0xaa}, 8), bytes.Repeat([]byte{0x55}, 16)...)},
		Now:  func() time.Time { return time.Date(1601, 1, 1, 0, 0, 0, 0, time.UTC) }}
}

func TestSpecVectors(t *testing.T) {
	if got := hex.EncodeToString(ntowfv2(NTHash("Password"), "User", "Domain")); got != "0c868a403bfd7a93a3001ef22ef02e3f" {
		t.Fatalf("NTOWFv2 %s", got)
	}
	c := specClient(t)
	c.Negotiate()
	msg, sess, err := c.Authenticate(specChallenge(t))
	if err != nil {
		t.Fatal(err)
	}
	a, err := parseAuthenticate(msg)
	if err != nil {
		t.Fatal(err)
	}
	wantNT := "68cd0ab851e51c96aabc927bebef6a1c" + "01010000000000000000000000000000aaaaaaaaaaaaaaaa00000000" + specTargetInfo + "00000000"
	for name, c := range map[string][2]string{
		"NTLMv2 response":              {hex.EncodeToString(a.nt), wantNT},
		"LMv2 response":                {hex.EncodeToString(a.lm), "86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa"},
		"encrypted random session key": {hex.EncodeToString(a.encryptedKey), "c5dad2544fc9799094ce1ce90bc9d03e"},
	} {
		if c[0] != c[1] {
			t.Errorf("%s:\n got %s\nwant %s", name, c[0], c[1])
		}
	}
	// 4.2.4.4: GSS_WrapEx of "Plaintext", client side.
	sealed, sig := sess.Seal(utf16le("Plaintext"))
	if hex.EncodeToString(sealed) != "54e50165bf1936dc996020c1811b0f06fb5f" || hex.EncodeToString(sig) != "010000007fb38ec5c55d497600000000" {
		t.Fatalf("client seal %x %x", sealed, sig)
	}

	// The server half accepts the same message and seals the spec's reply.
	p := &Pending{srv: &Server{NTHash: func(u, d string) ([]byte, bool) { return NTHash("Password"), u == "User" }},
		negotiate: c.negotiate, challenge: specChallenge(t), serverChallenge: unhex(t, "0123456789abcdef")}
	id, ssess, err := p.Accept(msg)
	if err != nil {
		t.Fatal(err)
	}
	if *id != (Identity{User: "User", Domain: "Domain", Workstation: "COMPUTER"}) {
		t.Fatalf("identity %+v", id)
	}
	if got, err := ssess.Unseal(sealed, sig); err != nil || string(got) != string(utf16le("Plaintext")) {
		t.Fatalf("server unseal %q %v", got, err)
	}
	sealed, sig = ssess.Seal(utf16le("Plaintext"))
	if hex.EncodeToString(sealed) != "160871b730ba74e946c453d7465b54278dd0" || hex.EncodeToString(sig) != "01000000b298b847ce7c580700000000" {
		t.Fatalf("server seal %x %x", sealed, sig)
	}
	if got, err := sess.Unseal(sealed, sig); err != nil || string(got) != string(utf16le("Plaintext")) {
		t.Fatalf("client unseal %q %v", got, err)
	}
}

func newPair(t *testing.T, srv *Server, c *Client) (*Session, *Session, *Identity, error) {
	t.Helper()
	p, ch, err := srv.Challenge(c.Negotiate())
	if err != nil {
		t.Fatal(err)
	}
	msg, cs, err := c.Authenticate(ch)
	if err != nil {
		t.Fatal(err)
	}
	id, ss, err := p.Accept(msg)
	return cs, ss, id, err
}

func testServer() *Server {
	return &Server{DomainName: "CORP", ComputerName: "CAS1", DNSDomainName: "corp.example",
		NTHash: func(u, d string) ([]byte, bool) {
			if u == "admin" && (d == "CORP" || d == "") {
				return NTHash("Adm1n-pw!"), true
			}
			return nil, false
		}}
}

func TestRoundTripWithMIC(t *testing.T) {
	cs, ss, id, err := newPair(t, testServer(), &Client{User: "admin", Domain: "CORP", Password: "Adm1n-pw!", TargetName: "HTTP/cas1"})
	if err != nil {
		t.Fatal(err)
	}
	if id.User != "admin" || id.Domain != "CORP" {
		t.Fatalf("identity %+v", id)
	}
	// Several messages each way: the RC4 streams and sequence numbers advance.
	for i := 0; i < 3; i++ {
		sealed, sig := cs.Seal([]byte("request"))
		if got, err := ss.Unseal(sealed, sig); err != nil || string(got) != "request" {
			t.Fatalf("unseal %d: %q %v", i, got, err)
		}
		sealed, sig = ss.Seal([]byte("reply"))
		if got, err := cs.Unseal(sealed, sig); err != nil || string(got) != "reply" {
			t.Fatalf("unseal reply %d: %q %v", i, got, err)
		}
	}
	// A flipped bit, and a replay, fail the integrity check.
	sealed, sig := cs.Seal([]byte("request"))
	sealed[0] ^= 1
	if _, err := ss.Unseal(sealed, sig); !errors.Is(err, ErrIntegrity) {
		t.Fatalf("tampered: %v", err)
	}
}

func TestRefusals(t *testing.T) {
	srv := testServer()
	if _, _, _, err := newPair(t, srv, &Client{User: "admin", Domain: "CORP", Password: "wrong"}); !errors.Is(err, ErrAuth) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, _, _, err := newPair(t, srv, &Client{User: "nobody", Domain: "CORP", Password: "x"}); !errors.Is(err, ErrAuth) {
		t.Fatalf("unknown user: %v", err)
	}
	// A MIC that does not match: the challenge was altered on the way.
	c := &Client{User: "admin", Domain: "CORP", Password: "Adm1n-pw!"}
	p, ch, _ := srv.Challenge(c.Negotiate())
	msg, _, _ := c.Authenticate(ch)
	msg[72] ^= 1
	if _, _, err := p.Accept(msg); !errors.Is(err, ErrAuth) {
		t.Fatalf("bad MIC: %v", err)
	}

	// Channel bindings: a mismatch is refused; none is refused only when required.
	srv.ChannelBindings = []byte("tls-server-end-point:right")
	if _, _, _, err := newPair(t, srv, &Client{User: "admin", Domain: "CORP", Password: "Adm1n-pw!", ChannelBindings: []byte("tls-server-end-point:right")}); err != nil {
		t.Fatalf("matching binding: %v", err)
	}
	if _, _, _, err := newPair(t, srv, &Client{User: "admin", Domain: "CORP", Password: "Adm1n-pw!", ChannelBindings: []byte("tls-server-end-point:wrong")}); !errors.Is(err, ErrAuth) {
		t.Fatalf("wrong binding: %v", err)
	}
	if _, _, _, err := newPair(t, srv, &Client{User: "admin", Domain: "CORP", Password: "Adm1n-pw!"}); err != nil {
		t.Fatalf("no binding, relaxed: %v", err)
	}
	srv.RequireChannelBindings = true
	if _, _, _, err := newPair(t, srv, &Client{User: "admin", Domain: "CORP", Password: "Adm1n-pw!"}); !errors.Is(err, ErrAuth) {
		t.Fatalf("no binding, strict: %v", err)
	}

	// A challenge without extended session security (NTLMv1) is refused.
	ch = specChallenge(t)
	ch[22] &^= 0x08 // clear FlagExtendedSecurity (0x00080000)
	if _, _, err := (&Client{User: "u", Password: "p"}).Authenticate(ch); !errors.Is(err, ErrAuth) {
		t.Fatalf("NTLMv1 challenge: %v", err)
	}
	// Errors never carry the password.
	_, _, _, err := newPair(t, testServer(), &Client{User: "admin", Domain: "CORP", Password: "S3cret-value"})
	if err == nil || bytes.Contains([]byte(err.Error()), []byte("S3cret")) {
		t.Fatalf("error %v", err)
	}
}

func TestSplitUser(t *testing.T) {
	for in, want := range map[string][2]string{`CORP\admin`: {"admin", "CORP"}, "admin@corp.example": {"admin@corp.example", ""}, "admin": {"admin", ""}} {
		if u, d := SplitUser(in); u != want[0] || d != want[1] {
			t.Errorf("%s: %s %s", in, u, d)
		}
	}
}
