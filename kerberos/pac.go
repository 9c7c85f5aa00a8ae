package kerberos

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf16"

	"github.com/jcmturner/gokrb5/v8/crypto"
	"github.com/jcmturner/gokrb5/v8/iana/keyusage"
	"github.com/jcmturner/gokrb5/v8/types"

	"github.com/segkcd/segkcd/internal/sid"
)

// PAC buffer types (MS-PAC 2.4).
const (
	pacLogonInfo       = 1
	pacServerChecksum  = 6
	pacPrivSvrChecksum = 7
	pacUPNDNSInfo      = 12
	// maxPAC bounds the PAC we read: a user in a thousand groups has one
	// of about 30 KiB.
	maxPAC = 1 << 20
	// upnHasSamNameAndSID is UPN_DNS_INFO's S flag (MS-PAC 2.10): the
	// structure carries the sAMAccountName and the SID. Windows DCs since
	// the November 2021 updates and Samba since 4.15 set it.
	upnHasSamNameAndSID = 0x2
	// upnImplicit is UPN_DNS_INFO's U flag: the account has no
	// userPrincipalName; the UPN given is sAMAccountName@dnsdomain.
	upnImplicit = 0x1
)

// pacBuffer is one PAC_INFO_BUFFER, its data bounds checked.
type pacBuffer struct {
	typ  uint32
	data []byte
	off  int // of data in the PAC
}

// accountFromPAC reads the account from a PAC (AD-WIN2K-PAC's data) and
// checks the PAC's server signature with key, the service account's. The
// name and SID come from UPN_DNS_INFO with its S flag, which Windows DCs
// write since the November 2021 updates (KB5008380) and Samba since 4.15:
// plain offsets that this reads itself, every one bounds checked, where the
// logon information would need an NDR decoder (gokrb5's allocates what a
// malformed count asks for).
func accountFromPAC(b []byte, key types.EncryptionKey) (*Account, error) {
	bufs, err := pacBuffers(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoPAC, err)
	}
	if err := checkServerSignature(b, bufs, key); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoPAC, err)
	}
	a := &Account{}
	for _, buf := range bufs {
		if buf.typ == pacUPNDNSInfo {
			if err := readUPNDNSInfo(buf.data, a); err != nil {
				return nil, fmt.Errorf("%w: UPN_DNS_INFO: %v", ErrNoPAC, err)
			}
			break
		}
	}
	if a.Name == "" {
		return nil, fmt.Errorf("%w: its UPN_DNS_INFO names no account (a DC without the November 2021 updates, KB5008380?)", ErrNoPAC)
	}
	if !validName(a.Name) || (a.UPN != "" && !validName(a.UPN)) {
		return nil, fmt.Errorf("%w: a name that is no account's", ErrNoPAC)
	}
	return a, nil
}

// pacBuffers reads PACTYPE's buffer list.
func pacBuffers(b []byte) ([]pacBuffer, error) {
	if len(b) < 8 || len(b) > maxPAC {
		return nil, fmt.Errorf("a PAC of %d bytes", len(b))
	}
	n := binary.LittleEndian.Uint32(b)
	if version := binary.LittleEndian.Uint32(b[4:]); version != 0 {
		return nil, fmt.Errorf("PAC version %d", version)
	}
	if n == 0 || n > 64 || 8+16*int(n) > len(b) {
		return nil, fmt.Errorf("%d buffers in %d bytes", n, len(b))
	}
	bufs := make([]pacBuffer, 0, n)
	for i := 0; i < int(n); i++ {
		h := b[8+16*i:]
		typ, size, off := binary.LittleEndian.Uint32(h), binary.LittleEndian.Uint32(h[4:]), binary.LittleEndian.Uint64(h[8:])
		if off > uint64(len(b)) || uint64(size) > uint64(len(b))-off {
			return nil, fmt.Errorf("buffer %d (type %d) runs past the PAC", i, typ)
		}
		bufs = append(bufs, pacBuffer{typ: typ, data: b[off : off+uint64(size)], off: int(off)})
	}
	return bufs, nil
}

// checkServerSignature verifies PAC_SERVER_CHECKSUM (MS-PAC 2.8.1): a
// keyed checksum with the service account's key over the PAC with the
// server and KDC signatures zeroed. A PAC that passes was made by the KDC
// (or by whoever holds the service account's key).
func checkServerSignature(b []byte, bufs []pacBuffer, key types.EncryptionKey) error {
	zeroed := bytes.Clone(b)
	var sigType int32
	var sig []byte
	for _, buf := range bufs {
		if buf.typ != pacServerChecksum && buf.typ != pacPrivSvrChecksum {
			continue
		}
		if len(buf.data) < 4 {
			return errors.New("short signature buffer")
		}
		st := int32(binary.LittleEndian.Uint32(buf.data))
		et, err := crypto.GetChksumEtype(st)
		if err != nil {
			return fmt.Errorf("signature type %d: %v", st, err)
		}
		n := et.GetHMACBitLength() / 8
		if n <= 0 || 4+n > len(buf.data) {
			return fmt.Errorf("signature type %d in %d bytes", st, len(buf.data))
		}
		clear(zeroed[buf.off+4 : buf.off+4+n])
		if buf.typ == pacServerChecksum {
			if sig != nil {
				return errors.New("two server signatures")
			}
			sigType, sig = st, buf.data[4:4+n]
		}
	}
	if sig == nil {
		return errors.New("no server signature")
	}
	et, err := crypto.GetChksumEtype(sigType)
	if err != nil {
		return err
	}
	if !et.VerifyChecksum(key.KeyValue, zeroed, sig, keyusage.KERB_NON_KERB_CKSUM_SALT) {
		return errors.New("the server signature does not verify with the service account's key")
	}
	return nil
}

// readUPNDNSInfo reads UPN_DNS_INFO (MS-PAC 2.10): the UPN, and with the S
// flag the sAMAccountName and SID. Offsets count from the structure's start.
func readUPNDNSInfo(b []byte, a *Account) error {
	if len(b) < 12 {
		return fmt.Errorf("%d bytes", len(b))
	}
	field := func(at int) ([]byte, error) {
		n, off := int(binary.LittleEndian.Uint16(b[at:])), int(binary.LittleEndian.Uint16(b[at+2:]))
		if off+n > len(b) {
			return nil, fmt.Errorf("a field at %d of %d bytes runs past %d", off, n, len(b))
		}
		return b[off : off+n], nil
	}
	upn, err := field(0)
	if err != nil {
		return err
	}
	if a.UPN, err = utf16le(upn); err != nil {
		return err
	}
	a.ImplicitUPN = binary.LittleEndian.Uint32(b[8:])&upnImplicit != 0
	if binary.LittleEndian.Uint32(b[8:])&upnHasSamNameAndSID == 0 {
		return nil
	}
	if len(b) < 20 {
		return errors.New("the S flag without its fields")
	}
	sam, err := field(12)
	if err != nil {
		return err
	}
	if a.Name, err = utf16le(sam); err != nil {
		return err
	}
	raw, err := field(16)
	if err != nil {
		return err
	}
	if a.SID, err = sid.Decode(raw); err != nil {
		return err
	}
	return nil
}

// utf16le decodes a UTF-16LE string of the PAC.
func utf16le(b []byte) (string, error) {
	if len(b)%2 != 0 {
		return "", errors.New("odd UTF-16 length")
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u)), nil
}
