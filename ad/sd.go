package ad

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/segkcd/segkcd/internal/sid"
)

// SecurityDescriptor is a Windows security descriptor in its self-relative
// binary form (MS-DTYP 2.4.6), as AD keeps
// msDS-AllowedToActOnBehalfOfOtherIdentity: the owner, the group and the
// discretionary ACL's entries. A SACL, and entries of types this package
// does not read, are kept as they are when the descriptor is written back.
type SecurityDescriptor struct {
	Owner, Group string // SIDs ("S-1-5-32-544"); "" when absent
	// DACL is nil when the descriptor has no DACL (everyone allowed), and
	// empty when it has one with no entries (no one).
	DACL []ACE

	control uint16
	sacl    []byte // the SACL as it came, or nil
}

// ACE is one access control entry.
type ACE struct {
	Type  byte   // ACEAccessAllowed, ACEAccessDenied, or another MS-DTYP 2.4.4.1 type
	Flags byte   // inheritance flags
	Mask  uint32 // access rights
	SID   string // the trustee; "" for types this package does not read
	raw   []byte // the whole entry, for types it does not read
}

// ACE types and rights used for resource-based constrained delegation.
const (
	ACEAccessAllowed = 0x00
	ACEAccessDenied  = 0x01
	// RBCDAccessMask is what Windows (Set-ADComputer
	// -PrincipalsAllowedToDelegateToAccount) and samba-tool delegation
	// add-principal grant each principal: CCDCLCSWRPWPDTLOCRSDRCWDWO.
	RBCDAccessMask = 0x000F01FF
)

const (
	sdSelfRelative   = 0x8000
	sdDACLPresent    = 0x0004
	sdSACLPresent    = 0x0010
	aclRevisionDS    = 4
	sidBuiltinAdmins = "S-1-5-32-544"
)

// ErrMalformedSD is a security descriptor that does not parse.
var ErrMalformedSD = errors.New("ad: malformed security descriptor")

// ParseSecurityDescriptor reads a self-relative security descriptor. Every
// offset and size is checked against the input: a value from the
// directory is outside input.
func ParseSecurityDescriptor(b []byte) (*SecurityDescriptor, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrMalformedSD}, a...)...)
	}
	if len(b) < 20 {
		return nil, bad("%d bytes, shorter than its header", len(b))
	}
	if b[0] != 1 {
		return nil, bad("revision %d", b[0])
	}
	sd := &SecurityDescriptor{control: binary.LittleEndian.Uint16(b[2:])}
	if sd.control&sdSelfRelative == 0 {
		return nil, bad("not self-relative")
	}
	off := func(i int) int { return int(binary.LittleEndian.Uint32(b[4+4*i:])) }
	sidAt := func(o int) (string, error) {
		if o < 20 || o+8 > len(b) {
			return "", bad("SID offset %d outside %d bytes", o, len(b))
		}
		n := 8 + 4*int(b[o+1])
		if o+n > len(b) {
			return "", bad("SID at %d runs past the end", o)
		}
		s, err := DecodeSID(b[o : o+n])
		if err != nil {
			return "", bad("%v", err)
		}
		return s, nil
	}
	var err error
	if o := off(0); o != 0 {
		if sd.Owner, err = sidAt(o); err != nil {
			return nil, err
		}
	}
	if o := off(1); o != 0 {
		if sd.Group, err = sidAt(o); err != nil {
			return nil, err
		}
	}
	aclAt := func(o int) ([]byte, error) {
		if o < 20 || o+8 > len(b) {
			return nil, bad("ACL offset %d outside %d bytes", o, len(b))
		}
		size := int(binary.LittleEndian.Uint16(b[o+2:]))
		if size < 8 || o+size > len(b) {
			return nil, bad("ACL of %d bytes at %d runs past the end", size, o)
		}
		return b[o : o+size], nil
	}
	if o := off(2); sd.control&sdSACLPresent != 0 && o != 0 {
		sacl, err := aclAt(o)
		if err != nil {
			return nil, err
		}
		sd.sacl = append([]byte(nil), sacl...)
	}
	if o := off(3); sd.control&sdDACLPresent != 0 && o != 0 {
		acl, err := aclAt(o)
		if err != nil {
			return nil, err
		}
		count := int(binary.LittleEndian.Uint16(acl[4:]))
		sd.DACL = []ACE{}
		p := 8
		for i := 0; i < count; i++ {
			if p+4 > len(acl) {
				return nil, bad("ACE %d runs past its ACL", i)
			}
			size := int(binary.LittleEndian.Uint16(acl[p+2:]))
			if size < 4 || p+size > len(acl) {
				return nil, bad("ACE %d of %d bytes runs past its ACL", i, size)
			}
			e := acl[p : p+size]
			a := ACE{Type: e[0], Flags: e[1]}
			switch a.Type {
			case ACEAccessAllowed, ACEAccessDenied:
				if size < 16 {
					return nil, bad("ACE %d of %d bytes", i, size)
				}
				a.Mask = binary.LittleEndian.Uint32(e[4:])
				n := 8 + 4*int(e[9])
				if 8+n > size {
					return nil, bad("ACE %d's SID runs past it", i)
				}
				if a.SID, err = DecodeSID(e[8 : 8+n]); err != nil {
					return nil, bad("ACE %d: %v", i, err)
				}
			default:
				a.raw = append([]byte(nil), e...)
				if size >= 8 {
					a.Mask = binary.LittleEndian.Uint32(e[4:])
				}
			}
			sd.DACL = append(sd.DACL, a)
			p += size
		}
	}
	return sd, nil
}

// Marshal writes the descriptor in self-relative form: header, owner,
// group, SACL, DACL.
func (sd *SecurityDescriptor) Marshal() ([]byte, error) {
	var owner, group []byte
	var err error
	if sd.Owner != "" {
		if owner, err = EncodeSID(sd.Owner); err != nil {
			return nil, err
		}
	}
	if sd.Group != "" {
		if group, err = EncodeSID(sd.Group); err != nil {
			return nil, err
		}
	}
	var dacl []byte
	if sd.DACL != nil {
		dacl = make([]byte, 8, 8+20*len(sd.DACL))
		dacl[0] = aclRevisionDS
		for _, a := range sd.DACL {
			if a.raw != nil {
				dacl = append(dacl, a.raw...)
				continue
			}
			sid, err := EncodeSID(a.SID)
			if err != nil {
				return nil, err
			}
			e := make([]byte, 8, 8+len(sid))
			e[0], e[1] = a.Type, a.Flags
			binary.LittleEndian.PutUint16(e[2:], uint16(8+len(sid)))
			binary.LittleEndian.PutUint32(e[4:], a.Mask)
			dacl = append(dacl, append(e, sid...)...)
		}
		if len(dacl) > 0xffff || len(sd.DACL) > 0xffff {
			return nil, fmt.Errorf("ad: DACL of %d bytes is too large", len(dacl))
		}
		binary.LittleEndian.PutUint16(dacl[2:], uint16(len(dacl)))
		binary.LittleEndian.PutUint16(dacl[4:], uint16(len(sd.DACL)))
	}
	control := uint16(sdSelfRelative) | sd.control&^(sdDACLPresent|sdSACLPresent)
	out := make([]byte, 20, 20+len(owner)+len(group)+len(sd.sacl)+len(dacl))
	out[0] = 1
	put := func(i int, part []byte) {
		if part != nil {
			binary.LittleEndian.PutUint32(out[4+4*i:], uint32(len(out)))
			out = append(out, part...)
		}
	}
	put(0, owner)
	put(1, group)
	if sd.sacl != nil {
		control |= sdSACLPresent
		put(2, sd.sacl)
	}
	if dacl != nil {
		control |= sdDACLPresent
		put(3, dacl)
	}
	binary.LittleEndian.PutUint16(out[2:], control)
	return out, nil
}

// allowedSIDs lists the trustees of the descriptor's access-allowed
// entries, in order, without repeats.
func (sd *SecurityDescriptor) allowedSIDs() []string {
	var out []string
	for _, a := range sd.DACL {
		if a.Type == ACEAccessAllowed && a.SID != "" && !containsFold(out, a.SID) {
			out = append(out, a.SID)
		}
	}
	return out
}

// EncodeSID writes a SID string ("S-1-5-21-...") in its binary form, as
// objectSid holds it. The string must be written as AD writes it (decimal,
// no leading zeros, an upper-case S).
func EncodeSID(s string) ([]byte, error) {
	b, err := sid.Encode(s)
	if err != nil {
		return nil, fmt.Errorf("ad: %q is not a SID", s)
	}
	return b, nil
}
