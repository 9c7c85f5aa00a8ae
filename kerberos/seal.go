package kerberos

import (
	"bytes"
	"crypto/hmac"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/types"
)

// Wrap token flags and key usages (RFC 4121 4.2.2, 2).
const (
	wrapSentByAcceptor = 0x01
	wrapSealed         = 0x02
	wrapAcceptorSubkey = 0x04

	usageAcceptorSeal  = 22
	usageInitiatorSeal = 24
)

// ErrUnseal wraps every failure to unseal a message: not a sealed wrap
// token, sent in the wrong direction, or failing its integrity check.
var ErrUnseal = errors.New("kerberos: cannot unseal")

// SecurityContext is an established GSS-API Kerberos context (RFC 4121)
// after mutual authentication: it seals messages for the peer and unseals
// the peer's, as WinRM's message encryption on plain HTTP needs (MS-WSMV
// 2.2.9.1). It uses the acceptor's subkey when the AP-REP carried one,
// else the initiator's, else the ticket's session key; AES keys only (RC4
// uses another token format). It is safe for concurrent use. Each sealed
// message carries a sequence number that its checksum covers; Unseal does
// not enforce their order, as the context does not ask for GSS
// sequencing.
type SecurityContext struct {
	mu             sync.Mutex
	key            types.EncryptionKey
	acceptorSubkey bool
	initiator      bool
	sendSeq        uint64
}

func newSecurityContext(initiator bool, session, initSub, accSub types.EncryptionKey, sendSeq int64) (*SecurityContext, error) {
	c := &SecurityContext{initiator: initiator, key: session, sendSeq: uint64(sendSeq)}
	switch {
	case len(accSub.KeyValue) > 0:
		c.key, c.acceptorSubkey = accSub, true
	case len(initSub.KeyValue) > 0:
		c.key = initSub
	}
	et, err := crypto.GetEtype(c.key.KeyType)
	if err != nil {
		return nil, err
	}
	if et.GetConfounderByteSize() != 16 || et.GetHMACBitLength() == 0 {
		return nil, fmt.Errorf("kerberos: message sealing needs an AES key, not etype %d", c.key.KeyType)
	}
	return c, nil
}

// Seal encrypts msg (GSS_Wrap with confidentiality) and returns it split
// the way Windows SSPI and MIT's gss_wrap_iov split it: header is the
// token header with the rotated trailer and the encrypted confounder (60
// bytes for AES), data is exactly as long as msg.
func (c *SecurityContext) Seal(msg []byte) (data, header []byte, err error) {
	c.mu.Lock()
	seq := c.sendSeq
	c.sendSeq++
	c.mu.Unlock()

	flags := byte(wrapSealed)
	usage := uint32(usageInitiatorSeal)
	if !c.initiator {
		flags |= wrapSentByAcceptor
		usage = usageAcceptorSeal
	}
	if c.acceptorSubkey {
		flags |= wrapAcceptorSubkey
	}
	hdr := []byte{0x05, 0x04, flags, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint64(hdr[8:], seq)
	et, _ := crypto.GetEtype(c.key.KeyType) // checked in newSecurityContext
	// plaintext | EC filler (none: AES needs no padding) | header copy
	_, ct, err := et.EncryptMessage(c.key.KeyValue, append(append([]byte(nil), msg...), hdr...), usage)
	if err != nil {
		return nil, nil, fmt.Errorf("kerberos: seal: %w", err)
	}
	// RRC moves the trailer (encrypted header copy and checksum) next to
	// the header, so that the data part is the plaintext's length.
	rrc := 16 + et.GetHMACBitLength()/8
	binary.BigEndian.PutUint16(hdr[6:], uint16(rrc))
	tok := append(hdr, ct[len(ct)-rrc:]...)
	tok = append(tok, ct[:len(ct)-rrc]...)
	split := 16 + rrc + et.GetConfounderByteSize()
	return tok[split:], tok[:split], nil
}

// Unseal checks and decrypts a sealed message from the peer, given as the
// header and data parts that Seal returns (any split of the token works).
func (c *SecurityContext) Unseal(data, header []byte) ([]byte, error) {
	tok := append(append([]byte(nil), header...), data...)
	if len(tok) < 16 || tok[0] != 0x05 || tok[1] != 0x04 || tok[3] != 0xff {
		return nil, fmt.Errorf("%w: not an RFC 4121 wrap token", ErrUnseal)
	}
	flags := tok[2]
	if flags&wrapSealed == 0 {
		return nil, fmt.Errorf("%w: token is signed, not sealed", ErrUnseal)
	}
	fromAcceptor, ec, body, err := c.peerToken(tok)
	if err != nil {
		return nil, err
	}
	if len(body) == 0 {
		return nil, fmt.Errorf("%w: empty token", ErrUnseal)
	}
	usage := uint32(usageInitiatorSeal)
	if fromAcceptor {
		usage = usageAcceptorSeal
	}
	// gokrb5's DecryptMessage panics on input shorter than its checksum.
	et, _ := crypto.GetEtype(c.key.KeyType)
	if len(body) < et.GetConfounderByteSize()+16+et.GetHMACBitLength()/8 {
		return nil, fmt.Errorf("%w: token too short", ErrUnseal)
	}
	plain, err := crypto.DecryptMessage(body, c.key, usage)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnseal, err)
	}
	if len(plain) < ec+16 {
		return nil, fmt.Errorf("%w: token too short", ErrUnseal)
	}
	// The encrypted header copy has RRC 0; everything else must match.
	cp := plain[len(plain)-16:]
	if !bytes.Equal(cp[:6], tok[:6]) || !bytes.Equal(cp[8:], tok[8:16]) {
		return nil, fmt.Errorf("%w: header does not match its encrypted copy", ErrUnseal)
	}
	return plain[:len(plain)-16-ec], nil
}

// Unwrap checks a wrap token from the peer (GSS_Unwrap, RFC 4121 4.2.6.2)
// and returns its payload: sealed or only signed, with any rotation count
// (RFC 4121 4.2.5 lets an acceptor rotate), as a SASL GSSAPI bind's
// security-layer offer arrives from a DC.
func (c *SecurityContext) Unwrap(token []byte) ([]byte, error) {
	if len(token) < 16 || token[0] != 0x05 || token[1] != 0x04 || token[3] != 0xff {
		return nil, fmt.Errorf("%w: not an RFC 4121 wrap token", ErrUnseal)
	}
	if token[2]&wrapSealed != 0 {
		return c.Unseal(token[16:], token[:16])
	}
	flags := token[2]
	fromAcceptor, ec, body, err := c.peerToken(token)
	if err != nil {
		return nil, err
	}
	et, _ := crypto.GetEtype(c.key.KeyType) // checked in newSecurityContext
	if ec != et.GetHMACBitLength()/8 || len(body) < ec {
		return nil, fmt.Errorf("%w: checksum length %d in a token of %d bytes", ErrUnseal, ec, len(body))
	}
	payload, sum := body[:len(body)-ec], body[len(body)-ec:]
	want, err := c.wrapChecksum(payload, flags, binary.BigEndian.Uint64(token[8:]), fromAcceptor)
	if err != nil {
		return nil, err
	}
	if !hmac.Equal(sum, want) {
		return nil, fmt.Errorf("%w: checksum does not verify", ErrUnseal)
	}
	return payload, nil
}

// peerToken checks a wrap token's direction and subkey flag against the
// context and returns who sent it, its EC field and its body with the
// rotation (RRC) undone, in a copy.
func (c *SecurityContext) peerToken(tok []byte) (fromAcceptor bool, ec int, body []byte, err error) {
	flags := tok[2]
	fromAcceptor = flags&wrapSentByAcceptor != 0
	if fromAcceptor != c.initiator {
		return false, 0, nil, fmt.Errorf("%w: token sent in the wrong direction (a reflected message?)", ErrUnseal)
	}
	if (flags&wrapAcceptorSubkey != 0) != c.acceptorSubkey {
		return false, 0, nil, fmt.Errorf("%w: token and context disagree on the acceptor subkey", ErrUnseal)
	}
	ec = int(binary.BigEndian.Uint16(tok[4:]))
	rrc := int(binary.BigEndian.Uint16(tok[6:]))
	body = tok[16:]
	if len(body) > 0 {
		r := rrc % len(body)
		body = append(append([]byte(nil), body[r:]...), body[:r]...)
	}
	return fromAcceptor, ec, body, nil
}

// Wrap makes a wrap token of msg for the peer with integrity only
// (GSS_Wrap without confidentiality), as a SASL GSSAPI client answers the
// server's security-layer offer (RFC 4752 3.1).
func (c *SecurityContext) Wrap(msg []byte) ([]byte, error) {
	c.mu.Lock()
	seq := c.sendSeq
	c.sendSeq++
	c.mu.Unlock()
	var flags byte
	if !c.initiator {
		flags |= wrapSentByAcceptor
	}
	if c.acceptorSubkey {
		flags |= wrapAcceptorSubkey
	}
	sum, err := c.wrapChecksum(msg, flags, seq, !c.initiator)
	if err != nil {
		return nil, err
	}
	tok := []byte{0x05, 0x04, flags, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(tok[4:], uint16(len(sum)))
	binary.BigEndian.PutUint64(tok[8:], seq)
	tok = append(tok, msg...)
	return append(tok, sum...), nil
}

// wrapChecksum is the checksum of a signed wrap token: over the payload,
// then the header with EC and RRC zero (RFC 4121 4.2.4), in the sender's
// seal key usage.
func (c *SecurityContext) wrapChecksum(payload []byte, flags byte, seq uint64, fromAcceptor bool) ([]byte, error) {
	usage := uint32(usageInitiatorSeal)
	if fromAcceptor {
		usage = usageAcceptorSeal
	}
	hdr := []byte{0x05, 0x04, flags, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint64(hdr[8:], seq)
	et, _ := crypto.GetEtype(c.key.KeyType)
	sum, err := et.GetChecksumHash(c.key.KeyValue, append(append([]byte(nil), payload...), hdr...), usage)
	if err != nil {
		return nil, fmt.Errorf("kerberos: wrap checksum: %w", err)
	}
	return sum, nil
}
