package ntlm

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rc4"
	"encoding/binary"
	"sync"
)

// Session is the security context after authentication (MS-NLMP 3.4):
// one RC4 stream and sequence number per direction. Messages must be
// sealed and unsealed in the order they travel, as on one connection; the
// methods are safe for concurrent use but don't reorder.
type Session struct {
	mu                 sync.Mutex
	flags              uint32
	sendSign, recvSign []byte
	sendSeal, recvSeal *rc4.Cipher
	sendSeq, recvSeq   uint32
}

var (
	c2sSign = []byte("session key to client-to-server signing key magic constant\x00")
	s2cSign = []byte("session key to server-to-client signing key magic constant\x00")
	c2sSeal = []byte("session key to client-to-server sealing key magic constant\x00")
	s2cSeal = []byte("session key to server-to-client sealing key magic constant\x00")
)

// newSession derives the four keys from the exported session key;
// client says which side this is.
func newSession(flags uint32, exportedKey []byte, client bool) *Session {
	sealBase := exportedKey
	switch {
	case flags&Flag128 != 0:
	case flags&Flag56 != 0:
		sealBase = exportedKey[:7]
	default:
		sealBase = exportedKey[:5]
	}
	derive := func(base, magic []byte) []byte {
		h := md5.New()
		h.Write(base)
		h.Write(magic)
		return h.Sum(nil)
	}
	cSign, sSign := derive(exportedKey, c2sSign), derive(exportedKey, s2cSign)
	cSeal, _ := rc4.NewCipher(derive(sealBase, c2sSeal))
	sSeal, _ := rc4.NewCipher(derive(sealBase, s2cSeal))
	s := &Session{flags: flags}
	if client {
		s.sendSign, s.recvSign, s.sendSeal, s.recvSeal = cSign, sSign, cSeal, sSeal
	} else {
		s.sendSign, s.recvSign, s.sendSeal, s.recvSeal = sSign, cSign, sSeal, cSeal
	}
	return s
}

// Flags are the negotiated flags the session was set up with.
func (s *Session) Flags() uint32 { return s.flags }

// SignatureSize is the length of an NTLM message signature.
const SignatureSize = 16

// Seal encrypts msg and returns the sealed bytes and the 16-byte signature
// (GSS_WrapEx with confidentiality).
func (s *Session) Seal(msg []byte) (sealed, sig []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sealed = make([]byte, len(msg))
	s.sendSeal.XORKeyStream(sealed, msg)
	sig = s.mac(s.sendSeal, s.sendSign, s.sendSeq, msg)
	s.sendSeq++
	return sealed, sig
}

// Unseal decrypts a message from the peer and checks its signature. An
// error (wrapping ErrIntegrity) leaves the session unusable: the RC4
// stream has moved on.
func (s *Session) Unseal(sealed, sig []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(sig) != SignatureSize {
		return nil, &Error{Op: "unseal", Reason: "signature is not 16 bytes", Kind: ErrIntegrity}
	}
	msg := make([]byte, len(sealed))
	s.recvSeal.XORKeyStream(msg, sealed)
	want := s.mac(s.recvSeal, s.recvSign, s.recvSeq, msg)
	s.recvSeq++
	if !hmac.Equal(want, sig) {
		return nil, &Error{Op: "unseal", Reason: "bad signature", Kind: ErrIntegrity}
	}
	return msg, nil
}

// mac is MAC() with extended session security (MS-NLMP 3.4.4.2).
func (s *Session) mac(handle *rc4.Cipher, signKey []byte, seq uint32, msg []byte) []byte {
	var seqb [4]byte
	binary.LittleEndian.PutUint32(seqb[:], seq)
	sum := hmacMD5(signKey, seqb[:], msg)[:8]
	if s.flags&FlagKeyExchange != 0 {
		handle.XORKeyStream(sum, sum)
	}
	out := make([]byte, 0, SignatureSize)
	out = binary.LittleEndian.AppendUint32(out, 1)
	out = append(out, sum...)
	return append(out, seqb[:]...)
}
