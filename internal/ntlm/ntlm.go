// Package ntlm is NTLMv2 authentication with session security (MS-NLMP):
// the client that winrs uses to reach WinRM with NTLM, where a message
// on plain HTTP must be sealed (MS-WSMV 2.2.9.1), and the server half that
// the WS-Man test host uses to accept it.
//
// Only NTLMv2 with extended session security is spoken: a challenge that
// would lead to NTLMv1 or LM is refused, as Windows does under
// "Send NTLMv2 response only. Refuse LM & NTLM". RC4 and MD5 are what the
// protocol defines; nothing here chooses them.
//
// gokrb5 and go-ntlmssp don't help here: go-ntlmssp (masterzen/winrm's NTLM)
// does not expose the session key, so it can't seal.
package ntlm

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rc4"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf16"

	"golang.org/x/crypto/md4"
)

// Negotiate flags (MS-NLMP 2.2.2.5) that this package sets or checks.
const (
	FlagUnicode          uint32 = 0x00000001
	FlagOEM              uint32 = 0x00000002
	FlagRequestTarget    uint32 = 0x00000004
	FlagSign             uint32 = 0x00000010
	FlagSeal             uint32 = 0x00000020
	FlagLMKey            uint32 = 0x00000080
	FlagNTLM             uint32 = 0x00000200
	FlagAnonymous        uint32 = 0x00000800
	FlagAlwaysSign       uint32 = 0x00008000
	FlagTargetTypeDomain uint32 = 0x00010000
	FlagExtendedSecurity uint32 = 0x00080000
	FlagTargetInfo       uint32 = 0x00800000
	FlagVersion          uint32 = 0x02000000
	Flag128              uint32 = 0x20000000
	FlagKeyExchange      uint32 = 0x40000000
	Flag56               uint32 = 0x80000000
)

// clientFlags is what the client offers: NTLMv2 with extended session
// security, 128-bit keys, key exchange, signing and sealing.
const clientFlags = FlagUnicode | FlagRequestTarget | FlagSign | FlagSeal | FlagNTLM | FlagAlwaysSign |
	FlagExtendedSecurity | FlagVersion | Flag128 | FlagKeyExchange | Flag56

// AV pair ids (MS-NLMP 2.2.2.1).
const (
	avEOL             = 0
	avNbComputerName  = 1
	avNbDomainName    = 2
	avDNSComputerName = 3
	avDNSDomainName   = 4
	avFlags           = 6
	avTimestamp       = 7
	avTargetName      = 9
	avChannelBindings = 10
)

// avFlagMIC in MsvAvFlags says the AUTHENTICATE message carries a MIC.
const avFlagMIC = 0x2

var signature = []byte("NTLMSSP\x00")

// version is the 8-byte VERSION field: Windows 10.0.17763, NTLM revision 15.
var version = []byte{10, 0, 0x63, 0x45, 0, 0, 0, 15}

// ErrAuth is the sentinel for a failed authentication: wrong password,
// unknown user, a bad MIC or channel binding. errors.Is works on every
// *Error whose Op is an authentication step.
var ErrAuth = errors.New("ntlm: authentication failed")

// ErrMalformed is the sentinel for a message that does not parse.
var ErrMalformed = errors.New("ntlm: malformed message")

// ErrIntegrity is the sentinel for a sealed message whose signature does
// not verify (tampered, replayed, or out of order).
var ErrIntegrity = errors.New("ntlm: message integrity check failed")

// Error says which step failed and why. It never holds a password, a hash
// or a key.
type Error struct {
	Op     string // "challenge", "authenticate", "unseal", ...
	Reason string
	Kind   error // ErrAuth, ErrMalformed or ErrIntegrity
}

// Error says the step and why it failed.
func (e *Error) Error() string { return "ntlm: " + e.Op + ": " + e.Reason }

// Unwrap returns the sentinel.
func (e *Error) Unwrap() error { return e.Kind }

func malformed(op, format string, a ...any) error {
	return &Error{Op: op, Reason: fmt.Sprintf(format, a...), Kind: ErrMalformed}
}

// NTHash is MD4 of the UTF-16LE password: the key Windows keeps for a user.
func NTHash(password string) []byte {
	h := md4.New()
	h.Write(utf16le(password))
	return h.Sum(nil)
}

// ntowfv2 is NTOWFv2 (MS-NLMP 3.3.2): HMAC-MD5 keyed with the NT hash over
// the upper-cased user name and the domain as given.
func ntowfv2(ntHash []byte, user, domain string) []byte {
	return hmacMD5(ntHash, utf16le(strings.ToUpper(user)+domain))
}

func hmacMD5(key []byte, data ...[]byte) []byte {
	m := hmac.New(md5.New, key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}

func utf16le(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

func fromUTF16le(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// rc4Once encrypts (or decrypts) data with a fresh RC4 key.
func rc4Once(key, data []byte) []byte {
	c, _ := rc4.NewCipher(key) // key is 16 bytes; rc4 only refuses empty or >256
	out := make([]byte, len(data))
	c.XORKeyStream(out, data)
	return out
}

// fileTime converts t to Windows FILETIME (100 ns since 1601).
func fileTime(t time.Time) uint64 {
	// In seconds first: UnixNano overflows before 1678.
	return uint64(t.Unix()*10000000+int64(t.Nanosecond()/100)) + 116444736000000000
}

// ChannelBindingHash is the MsvAvChannelBindings value (MS-NLMP 2.2.2.1):
// MD5 of a gss_channel_bindings_struct whose only content is the
// application data, e.g. "tls-server-end-point:" + the hash of the
// server's certificate (RFC 5929).
func ChannelBindingHash(applicationData []byte) []byte {
	b := make([]byte, 20+len(applicationData))
	binary.LittleEndian.PutUint32(b[16:], uint32(len(applicationData)))
	copy(b[20:], applicationData)
	h := md5.Sum(b)
	return h[:]
}

// avPair is one AV_PAIR.
type avPair struct {
	id    uint16
	value []byte
}

func parseAVPairs(b []byte) ([]avPair, error) {
	var out []avPair
	for {
		if len(b) < 4 {
			return nil, malformed("target info", "truncated AV pair")
		}
		id, n := binary.LittleEndian.Uint16(b), int(binary.LittleEndian.Uint16(b[2:]))
		b = b[4:]
		if id == avEOL {
			return out, nil
		}
		if len(b) < n {
			return nil, malformed("target info", "AV pair %d overruns the field", id)
		}
		out = append(out, avPair{id, b[:n:n]})
		b = b[n:]
	}
}

func marshalAVPairs(pairs []avPair) []byte {
	var b []byte
	for _, p := range pairs {
		b = binary.LittleEndian.AppendUint16(b, p.id)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(p.value)))
		b = append(b, p.value...)
	}
	return append(b, 0, 0, 0, 0) // MsvAvEOL
}

func findAV(pairs []avPair, id uint16) ([]byte, bool) {
	for _, p := range pairs {
		if p.id == id {
			return p.value, true
		}
	}
	return nil, false
}

// field reads a (length, maxlength, offset) descriptor at off and returns
// the bytes it points at in msg.
func field(msg []byte, off int, op, name string) ([]byte, error) {
	if len(msg) < off+8 {
		return nil, malformed(op, "message too short for the %s field", name)
	}
	n := int(binary.LittleEndian.Uint16(msg[off:]))
	at := int(binary.LittleEndian.Uint32(msg[off+4:]))
	if n == 0 {
		return nil, nil
	}
	if at < 0 || at > len(msg) || n > len(msg)-at {
		return nil, malformed(op, "%s field points outside the message", name)
	}
	return msg[at : at+n : at+n], nil
}

// checkHeader checks the signature and message type.
func checkHeader(msg []byte, typ uint32, op string) error {
	if len(msg) < 12 || string(msg[:8]) != string(signature) {
		return malformed(op, "not an NTLMSSP message")
	}
	if t := binary.LittleEndian.Uint32(msg[8:]); t != typ {
		return malformed(op, "message type %d, want %d", t, typ)
	}
	return nil
}

// builder lays out a message: a fixed header, then the payload, with the
// header's descriptors pointing into it.
type builder struct {
	head    []byte
	payload []byte
}

func newBuilder(typ uint32, headLen int) *builder {
	b := &builder{head: make([]byte, headLen)}
	copy(b.head, signature)
	binary.LittleEndian.PutUint32(b.head[8:], typ)
	return b
}

// put writes a descriptor at off for data appended to the payload.
func (b *builder) put(off int, data []byte) {
	binary.LittleEndian.PutUint16(b.head[off:], uint16(len(data)))
	binary.LittleEndian.PutUint16(b.head[off+2:], uint16(len(data)))
	binary.LittleEndian.PutUint32(b.head[off+4:], uint32(len(b.head)+len(b.payload)))
	b.payload = append(b.payload, data...)
}

func (b *builder) bytes() []byte { return append(b.head, b.payload...) }
