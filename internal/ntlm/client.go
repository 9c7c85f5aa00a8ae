package ntlm

import (
	"crypto/rand"
	"encoding/binary"
	"io"
	"strings"
	"time"
)

// Client is one NTLM authentication from the client side: Negotiate, then
// Authenticate with the server's challenge. Use a Client once.
type Client struct {
	// User and Domain as NTLM carries them: "alice" and "CORP", or a UPN
	// ("alice@corp.example") with an empty Domain. SplitUser parses both.
	User, Domain, Password string
	// Workstation is the client's NetBIOS name; optional.
	Workstation string
	// TargetName is the SPN written into MsvAvTargetName ("HTTP/host");
	// optional.
	TargetName string
	// ChannelBindings is the TLS channel binding's application data,
	// "tls-server-end-point:" followed by the certificate hash (RFC 5929);
	// nil on plain HTTP.
	ChannelBindings []byte

	// Rand and Now default to crypto/rand and time.Now; tests pin them.
	Rand io.Reader
	Now  func() time.Time

	negotiate []byte
}

// SplitUser turns "DOMAIN\user" into ("user", "DOMAIN"); anything else
// (a bare name or a UPN) is returned as the user with an empty domain.
func SplitUser(s string) (user, domain string) {
	if i := strings.IndexByte(s, '\\'); i >= 0 {
		return s[i+1:], s[:i]
	}
	return s, ""
}

// Negotiate returns the NEGOTIATE_MESSAGE.
func (c *Client) Negotiate() []byte {
	b := newBuilder(1, 40)
	binary.LittleEndian.PutUint32(b.head[12:], clientFlags)
	copy(b.head[32:], version)
	c.negotiate = b.bytes()
	return c.negotiate
}

// Authenticate answers the server's CHALLENGE_MESSAGE with the
// AUTHENTICATE_MESSAGE and returns the session it sets up. It refuses a
// challenge that does not allow NTLMv2 with extended session security.
func (c *Client) Authenticate(challenge []byte) ([]byte, *Session, error) {
	const op = "challenge"
	if c.negotiate == nil {
		c.Negotiate()
	}
	if c.User == "" {
		return nil, nil, &Error{Op: "authenticate", Reason: "no user name (anonymous NTLM is not supported)", Kind: ErrAuth}
	}
	ch, err := ParseChallenge(challenge)
	if err != nil {
		return nil, nil, err
	}
	flags := ch.Flags & clientFlags
	switch {
	case flags&FlagUnicode == 0:
		return nil, nil, malformed(op, "server does not speak Unicode")
	case flags&FlagExtendedSecurity == 0:
		return nil, nil, &Error{Op: op, Reason: "server did not offer extended session security (NTLMv1 refused)", Kind: ErrAuth}
	case ch.targetInfo == nil:
		return nil, nil, &Error{Op: op, Reason: "server sent no target info (NTLMv2 needs it)", Kind: ErrAuth}
	}
	rnd := c.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	pairs := ch.pairs
	ts, withMIC := findAV(pairs, avTimestamp)
	if !withMIC || len(ts) != 8 {
		now := time.Now
		if c.Now != nil {
			now = c.Now
		}
		ts = binary.LittleEndian.AppendUint64(nil, fileTime(now()))
		withMIC = false
	}
	pairs = c.clientPairs(pairs, withMIC)

	clientChallenge := make([]byte, 8)
	if _, err := io.ReadFull(rnd, clientChallenge); err != nil {
		return nil, nil, err
	}
	temp := []byte{1, 1, 0, 0, 0, 0, 0, 0}
	temp = append(temp, ts...)
	temp = append(temp, clientChallenge...)
	temp = append(temp, 0, 0, 0, 0)
	temp = append(temp, marshalAVPairs(pairs)...)
	temp = append(temp, 0, 0, 0, 0)

	key := ntowfv2(NTHash(c.Password), c.User, c.Domain)
	proof := hmacMD5(key, ch.ServerChallenge, temp)
	nt := append(proof, temp...)
	lm := make([]byte, 24)
	if !withMIC {
		// LMv2 goes only where no timestamp came (MS-NLMP 3.1.5.1.2).
		lm = append(hmacMD5(key, ch.ServerChallenge, clientChallenge), clientChallenge...)
	}
	baseKey := hmacMD5(key, proof)
	exported, encryptedKey := baseKey, []byte(nil)
	if flags&FlagKeyExchange != 0 {
		exported = make([]byte, 16)
		if _, err := io.ReadFull(rnd, exported); err != nil {
			return nil, nil, err
		}
		encryptedKey = rc4Once(baseKey, exported)
	}

	b := newBuilder(3, 88)
	b.put(28, utf16le(c.Domain))
	b.put(36, utf16le(c.User))
	b.put(44, utf16le(c.Workstation))
	b.put(12, lm)
	b.put(20, nt)
	b.put(52, encryptedKey)
	binary.LittleEndian.PutUint32(b.head[60:], flags)
	copy(b.head[64:], version)
	msg := b.bytes()
	if withMIC {
		copy(msg[72:], hmacMD5(exported, c.negotiate, challenge, msg))
	}
	return msg, newSession(flags, exported, true), nil
}

// clientPairs is the server's target info with the client's additions:
// the MIC flag, channel bindings and target name.
func (c *Client) clientPairs(server []avPair, withMIC bool) []avPair {
	out := make([]avPair, 0, len(server)+3)
	hasFlags := false
	for _, p := range server {
		switch p.id {
		case avFlags:
			hasFlags = true
			v := uint32(0)
			if len(p.value) == 4 {
				v = binary.LittleEndian.Uint32(p.value)
			}
			if withMIC {
				v |= avFlagMIC
			}
			p = avPair{avFlags, binary.LittleEndian.AppendUint32(nil, v)}
		case avChannelBindings, avTargetName:
			continue // ours, below
		}
		out = append(out, p)
	}
	if withMIC && !hasFlags {
		out = append(out, avPair{avFlags, binary.LittleEndian.AppendUint32(nil, avFlagMIC)})
	}
	if c.ChannelBindings != nil {
		out = append(out, avPair{avChannelBindings, ChannelBindingHash(c.ChannelBindings)})
	} else if withMIC {
		out = append(out, avPair{avChannelBindings, make([]byte, 16)}) // as Windows: zeros, no binding
	}
	if c.TargetName != "" {
		out = append(out, avPair{avTargetName, utf16le(c.TargetName)})
	}
	return out
}

// Challenge is a parsed CHALLENGE_MESSAGE.
type Challenge struct {
	Flags           uint32
	ServerChallenge []byte
	TargetName      string
	targetInfo      []byte
	pairs           []avPair
}

// ParseChallenge parses a CHALLENGE_MESSAGE from a server.
func ParseChallenge(msg []byte) (*Challenge, error) {
	const op = "challenge"
	if err := checkHeader(msg, 2, op); err != nil {
		return nil, err
	}
	if len(msg) < 48 {
		return nil, malformed(op, "message too short")
	}
	ch := &Challenge{Flags: binary.LittleEndian.Uint32(msg[20:]), ServerChallenge: msg[24:32:32]}
	name, err := field(msg, 12, op, "target name")
	if err != nil {
		return nil, err
	}
	if ch.Flags&FlagUnicode != 0 {
		ch.TargetName = fromUTF16le(name)
	}
	if ch.Flags&FlagTargetInfo != 0 {
		if ch.targetInfo, err = field(msg, 40, op, "target info"); err != nil {
			return nil, err
		}
		if ch.targetInfo != nil {
			if ch.pairs, err = parseAVPairs(ch.targetInfo); err != nil {
				return nil, err
			}
		}
	}
	return ch, nil
}
