package ad

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/gssapi"
	"github.com/jcmturner/gokrb5/v8/iana/keyusage"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"
)

// saslGSSAPI is the client side of a SASL GSSAPI bind (RFC 4752) on a
// gokrb5 client. go-ldap v3.4.10's own client misreads the DC's final wrap
// token (it ignores the rotation count and the sealed flag, RFC 4121
// 4.2.4-4.2.5). Checked again with v3.4.15: its client binds to the lab's
// Samba 4.17 (whose final token is neither rotated nor sealed), but it
// still reads the rotation count without rotating and has no unsealing,
// which RFC 4121 allows an acceptor to send; so this one stays.
type saslGSSAPI struct {
	cl     *client.Client
	key    types.EncryptionKey // the service ticket's session key
	subkey types.EncryptionKey // the acceptor's subkey from the AP-REP, if any
}

// InitSecContext sends the AP-REQ, then reads the DC's AP-REP.
func (s *saslGSSAPI) InitSecContext(target string, input []byte) ([]byte, bool, error) {
	return s.InitSecContextWithOptions(target, input, nil)
}

// InitSecContextWithOptions is InitSecContext with AP options (go-ldap
// passes none unless asked).
func (s *saslGSSAPI) InitSecContextWithOptions(target string, input []byte, apOptions []int) ([]byte, bool, error) {
	if input == nil {
		tkt, key, err := s.cl.GetServiceTicket(target)
		if err != nil {
			return nil, false, err
		}
		s.key = key
		flags := []int{gssapi.ContextFlagInteg, gssapi.ContextFlagConf, gssapi.ContextFlagMutual}
		tok, err := spnego.NewKRB5TokenAPREQ(s.cl, tkt, key, flags, apOptions)
		if err != nil {
			return nil, false, err
		}
		out, err := tok.Marshal()
		return out, true, err
	}
	var tok spnego.KRB5Token
	if err := tok.Unmarshal(input); err != nil {
		return nil, false, fmt.Errorf("GSSAPI reply: %w", err)
	}
	if tok.IsKRBError() {
		return nil, false, tok.KRBError
	}
	if !tok.IsAPRep() {
		return nil, false, errors.New("GSSAPI reply is neither AP-REP nor KRB-ERROR")
	}
	plain, err := crypto.DecryptEncPart(tok.APRep.EncPart, s.key, keyusage.AP_REP_ENCPART)
	if err != nil {
		return nil, false, fmt.Errorf("GSSAPI AP-REP: %w", err)
	}
	var part messages.EncAPRepPart
	if err := part.Unmarshal(plain); err != nil {
		return nil, false, fmt.Errorf("GSSAPI AP-REP: %w", err)
	}
	s.subkey = part.Subkey
	return []byte{}, false, nil
}

// Wrap token flags (RFC 4121 4.2.2).
const (
	wrapSentByAcceptor = 0x01
	wrapSealed         = 0x02
	wrapAcceptorSubkey = 0x04
	// SASL GSSAPI security layers (RFC 4752 3.3).
	saslNoSecurityLayer = 0x01
)

// NegotiateSaslAuth checks the DC's offer of security layers and chooses
// none: the connection is already TLS.
func (s *saslGSSAPI) NegotiateSaslAuth(input []byte, authzid string) ([]byte, error) {
	flags, payload, err := unwrapToken(input, s.key, s.subkey)
	if err != nil {
		return nil, fmt.Errorf("GSSAPI SASL offer: %w", err)
	}
	if len(payload) != 4 {
		return nil, fmt.Errorf("GSSAPI SASL offer: %d bytes, want 4", len(payload))
	}
	if payload[0]&saslNoSecurityLayer == 0 {
		return nil, errors.New("the DC insists on a SASL security layer, which segkcd does not implement; bind over LDAPS")
	}
	key := s.key
	if flags&wrapAcceptorSubkey != 0 {
		key = s.subkey
	}
	et, err := crypto.GetEtype(key.KeyType)
	if err != nil {
		return nil, err
	}
	reply := &gssapi.WrapToken{
		Flags:     flags & wrapAcceptorSubkey,
		EC:        uint16(et.GetHMACBitLength() / 8),
		SndSeqNum: 1,
		Payload:   append([]byte{saslNoSecurityLayer, 0, 0, 0}, authzid...),
	}
	if err := reply.SetCheckSum(key, keyusage.GSSAPI_INITIATOR_SEAL); err != nil {
		return nil, err
	}
	return reply.Marshal()
}

// DeleteSecContext forgets the keys.
func (s *saslGSSAPI) DeleteSecContext() error {
	s.key, s.subkey = types.EncryptionKey{}, types.EncryptionKey{}
	return nil
}

// unwrapToken verifies (or decrypts) an RFC 4121 Wrap token from the acceptor
// and returns its flags and payload.
func unwrapToken(b []byte, key, subkey types.EncryptionKey) (byte, []byte, error) {
	if len(b) < gssapi.HdrLen || b[0] != 0x05 || b[1] != 0x04 || b[3] != 0xFF {
		return 0, nil, errors.New("not a wrap token")
	}
	flags := b[2]
	if flags&wrapSentByAcceptor == 0 {
		return 0, nil, errors.New("wrap token not sent by the acceptor")
	}
	if flags&wrapAcceptorSubkey != 0 {
		if len(subkey.KeyValue) == 0 {
			return 0, nil, errors.New("wrap token uses an acceptor subkey the AP-REP did not carry")
		}
		key = subkey
	}
	ec := int(binary.BigEndian.Uint16(b[4:6]))
	rrc := int(binary.BigEndian.Uint16(b[6:8]))
	seq := binary.BigEndian.Uint64(b[8:16])
	data := append([]byte(nil), b[gssapi.HdrLen:]...)
	if len(data) > 0 {
		// Undo the right rotation by RRC octets.
		r := rrc % len(data)
		data = append(data[r:], data[:r]...)
	}
	if flags&wrapSealed != 0 {
		// gokrb5's DecryptMessage panics on input shorter than its checksum.
		et, err := crypto.GetEtype(key.KeyType)
		if err != nil {
			return 0, nil, err
		}
		if len(data) < et.GetConfounderByteSize()+et.GetHMACBitLength()/8 {
			return 0, nil, errors.New("sealed wrap token too short")
		}
		plain, err := crypto.DecryptMessage(data, key, keyusage.GSSAPI_ACCEPTOR_SEAL)
		if err != nil {
			return 0, nil, err
		}
		// plaintext | EC filler octets | copy of the header (with RRC 0)
		if len(plain) < ec+gssapi.HdrLen {
			return 0, nil, errors.New("sealed wrap token too short")
		}
		hdr := plain[len(plain)-gssapi.HdrLen:]
		if !bytes.Equal(hdr[:6], b[:6]) || !bytes.Equal(hdr[8:], b[8:16]) {
			return 0, nil, errors.New("sealed wrap token header does not match")
		}
		return flags, plain[:len(plain)-gssapi.HdrLen-ec], nil
	}
	if ec > len(data) {
		return 0, nil, errors.New("wrap token checksum longer than the token")
	}
	wt := gssapi.WrapToken{Flags: flags, EC: uint16(ec), RRC: uint16(rrc), SndSeqNum: seq,
		Payload: data[:len(data)-ec], CheckSum: data[len(data)-ec:]}
	if _, err := wt.Verify(key, keyusage.GSSAPI_ACCEPTOR_SEAL); err != nil {
		return 0, nil, err
	}
	return flags, wt.Payload, nil
}
