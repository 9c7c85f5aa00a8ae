package ntlm

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"io"
	"time"
)

// Server accepts NTLMv2 authentications the way a Windows host does for
// its accounts. The WS-Man test host uses it; it is not a domain
// controller (no pass-through to a DC).
type Server struct {
	// NTHash returns a user's NT hash (see NTHash); ok is false for an
	// unknown user. user and domain are as the client sent them.
	NTHash func(user, domain string) (hash []byte, ok bool)
	// DomainName and ComputerName are the NetBIOS names in the target
	// info; DNSDomainName and DNSComputerName are optional.
	DomainName, ComputerName       string
	DNSDomainName, DNSComputerName string
	// ChannelBindings is the expected TLS binding application data (see
	// Client.ChannelBindings), nil on plain HTTP. A client that sends a
	// different binding is refused; one that sends none is accepted unless
	// RequireChannelBindings (IIS's "extended protection": Relaxed and
	// Strict).
	ChannelBindings        []byte
	RequireChannelBindings bool

	Rand io.Reader
	Now  func() time.Time
}

// Identity is who authenticated.
type Identity struct {
	User, Domain, Workstation string
}

// Pending is an authentication between the server's CHALLENGE and the
// client's AUTHENTICATE; use it once.
type Pending struct {
	srv                  *Server
	negotiate, challenge []byte
	serverChallenge      []byte
}

// Challenge answers a NEGOTIATE_MESSAGE with a CHALLENGE_MESSAGE.
func (s *Server) Challenge(negotiate []byte) (*Pending, []byte, error) {
	const op = "negotiate"
	if err := checkHeader(negotiate, 1, op); err != nil {
		return nil, nil, err
	}
	if len(negotiate) < 16 {
		return nil, nil, malformed(op, "message too short")
	}
	want := binary.LittleEndian.Uint32(negotiate[12:])
	if want&FlagExtendedSecurity == 0 {
		return nil, nil, &Error{Op: op, Reason: "client wants NTLMv1 session security (refused)", Kind: ErrAuth}
	}
	// Unicode when the client offers it, else OEM (MS-NLMP 3.2.5.1.1):
	// ntlm-auth, which pywinrm uses, offers only OEM.
	charset := want & FlagUnicode
	if charset == 0 {
		if want&FlagOEM == 0 {
			return nil, nil, malformed(op, "client offers neither Unicode nor OEM")
		}
		charset = FlagOEM
	}
	rnd := s.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	sc := make([]byte, 8)
	if _, err := io.ReadFull(rnd, sc); err != nil {
		return nil, nil, err
	}
	pairs := []avPair{{avNbDomainName, utf16le(s.DomainName)}, {avNbComputerName, utf16le(s.ComputerName)}}
	if s.DNSDomainName != "" {
		pairs = append(pairs, avPair{avDNSDomainName, utf16le(s.DNSDomainName)})
	}
	if s.DNSComputerName != "" {
		pairs = append(pairs, avPair{avDNSComputerName, utf16le(s.DNSComputerName)})
	}
	pairs = append(pairs, avPair{avTimestamp, binary.LittleEndian.AppendUint64(nil, fileTime(now()))})

	flags := want&clientFlags&^FlagUnicode | charset | FlagTargetInfo | FlagTargetTypeDomain
	b := newBuilder(2, 56)
	b.put(12, encodeString(s.DomainName, flags))
	binary.LittleEndian.PutUint32(b.head[20:], flags)
	copy(b.head[24:], sc)
	b.put(40, marshalAVPairs(pairs))
	copy(b.head[48:], version)
	msg := b.bytes()
	p := &Pending{srv: s, negotiate: append([]byte(nil), negotiate...), challenge: msg, serverChallenge: sc}
	return p, msg, nil
}

// Accept checks an AUTHENTICATE_MESSAGE: the NTLMv2 proof, the MIC and the
// channel binding. A wrong password and an unknown user give the same
// error, wrapping ErrAuth.
func (p *Pending) Accept(msg []byte) (*Identity, *Session, error) {
	const op = "authenticate"
	fail := func(reason string) (*Identity, *Session, error) {
		return nil, nil, &Error{Op: op, Reason: reason, Kind: ErrAuth}
	}
	a, err := parseAuthenticate(msg)
	if err != nil {
		return nil, nil, err
	}
	if len(a.nt) == 24 {
		return fail("NTLMv1 response refused")
	}
	hash, ok := p.srv.NTHash(a.user, a.domain)
	if !ok {
		return fail("logon failure: unknown user name or bad password")
	}
	key := ntowfv2(hash, a.user, a.domain)
	proof, temp := a.nt[:16], a.nt[16:]
	if !hmac.Equal(proof, hmacMD5(key, p.serverChallenge, temp)) {
		return fail("logon failure: unknown user name or bad password")
	}
	pairs, err := parseAVPairs(temp[28:])
	if err != nil {
		return nil, nil, err
	}
	baseKey := hmacMD5(key, proof)
	exported := baseKey
	if a.flags&FlagKeyExchange != 0 {
		if len(a.encryptedKey) != 16 {
			return nil, nil, malformed(op, "key exchange without a 16-byte session key")
		}
		exported = rc4Once(baseKey, a.encryptedKey)
	}
	if f, ok := findAV(pairs, avFlags); ok && len(f) == 4 && binary.LittleEndian.Uint32(f)&avFlagMIC != 0 {
		if len(msg) < 88 {
			return nil, nil, malformed(op, "MIC flagged but absent")
		}
		zeroed := append([]byte(nil), msg...)
		copy(zeroed[72:88], make([]byte, 16))
		if !hmac.Equal(msg[72:88], hmacMD5(exported, p.negotiate, p.challenge, zeroed)) {
			return fail("bad MIC (a message was altered in transit)")
		}
	}
	if want := p.srv.ChannelBindings; want != nil {
		got, ok := findAV(pairs, avChannelBindings)
		unbound := !ok || bytes.Equal(got, make([]byte, 16))
		switch {
		case unbound && p.srv.RequireChannelBindings:
			return fail("channel binding required")
		case !unbound && !hmac.Equal(got, ChannelBindingHash(want)):
			return fail("channel binding does not match this TLS connection")
		}
	}
	return &Identity{User: a.user, Domain: a.domain, Workstation: a.workstation}, newSession(a.flags, exported, false), nil
}

type authenticate struct {
	lm, nt, encryptedKey      []byte
	user, domain, workstation string
	flags                     uint32
}

// parseAuthenticate parses an AUTHENTICATE_MESSAGE (the server's input).
func parseAuthenticate(msg []byte) (*authenticate, error) {
	const op = "authenticate"
	if err := checkHeader(msg, 3, op); err != nil {
		return nil, err
	}
	if len(msg) < 64 {
		return nil, malformed(op, "message too short")
	}
	a := &authenticate{flags: binary.LittleEndian.Uint32(msg[60:])}
	var err error
	var dom, user, ws []byte
	for _, f := range []struct {
		off  int
		name string
		dst  *[]byte
	}{{12, "LM response", &a.lm}, {20, "NT response", &a.nt}, {28, "domain", &dom}, {36, "user", &user},
		{44, "workstation", &ws}, {52, "session key", &a.encryptedKey}} {
		if *f.dst, err = field(msg, f.off, op, f.name); err != nil {
			return nil, err
		}
	}
	if len(a.nt) != 24 && len(a.nt) < 16+28+4 {
		return nil, malformed(op, "NT response of %d bytes", len(a.nt))
	}
	a.user, a.domain, a.workstation = decodeString(user, a.flags), decodeString(dom, a.flags), decodeString(ws, a.flags)
	return a, nil
}

// encodeString and decodeString are the message's string fields: UTF-16LE
// under FlagUnicode, else the OEM code page, taken here as Latin-1.
func encodeString(v string, flags uint32) []byte {
	if flags&FlagUnicode != 0 {
		return utf16le(v)
	}
	b := make([]byte, 0, len(v))
	for _, r := range v {
		if r > 0xff {
			r = '?'
		}
		b = append(b, byte(r))
	}
	return b
}

func decodeString(b []byte, flags uint32) string {
	if flags&FlagUnicode != 0 {
		return fromUTF16le(b)
	}
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return string(r)
}
