package kerberos

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"time"

	"github.com/jcmturner/gokrb5/v8/types"
)

// WriteCCache writes tickets as an MIT credential cache (file format
// version 4), which klist -c and any GSS-API client read. The default
// principal is the first ticket's client: for S4U tickets, the user.
// The cache holds session keys: write it to a file only the owner can read.
func WriteCCache(w io.Writer, tickets ...*Ticket) error {
	if len(tickets) == 0 {
		return errors.New("kerberos: no ticket to write")
	}
	b := bufio.NewWriter(w)
	cw := ccWriter{w: b}
	cw.u16(0x0504)
	cw.u16(0) // no header fields
	cw.principal(tickets[0].Client, tickets[0].ClientRealm)
	for _, t := range tickets {
		raw, err := t.Ticket.Marshal()
		if err != nil {
			return err
		}
		cw.principal(t.Client, t.ClientRealm)
		cw.principal(t.Server, t.ServerRealm)
		cw.u16(uint16(t.SessionKey.KeyType))
		cw.data(t.SessionKey.KeyValue)
		for _, ts := range []time.Time{t.AuthTime, t.StartTime, t.EndTime, t.RenewTill} {
			cw.time(ts)
		}
		cw.u8(0) // is_skey
		var f [4]byte
		copy(f[:], t.Flags.Bytes)
		cw.u32(binary.BigEndian.Uint32(f[:]))
		cw.u32(0) // addresses
		cw.u32(0) // authdata
		cw.data(raw)
		cw.data(nil) // second ticket
	}
	if cw.err != nil {
		return cw.err
	}
	return b.Flush()
}

type ccWriter struct {
	w   *bufio.Writer
	err error
}

func (c *ccWriter) write(b []byte) {
	if c.err == nil {
		_, c.err = c.w.Write(b)
	}
}

func (c *ccWriter) u8(v uint8) { c.write([]byte{v}) }

func (c *ccWriter) u16(v uint16) {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	c.write(b[:])
}

func (c *ccWriter) u32(v uint32) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	c.write(b[:])
}

func (c *ccWriter) data(b []byte) {
	c.u32(uint32(len(b)))
	c.write(b)
}

func (c *ccWriter) time(t time.Time) {
	s := t.Unix()
	if t.IsZero() || s < 0 {
		s = 0
	}
	if s > math.MaxUint32 {
		s = math.MaxUint32
	}
	c.u32(uint32(s))
}

func (c *ccWriter) principal(p types.PrincipalName, realm string) {
	c.u32(uint32(p.NameType))
	c.u32(uint32(len(p.NameString)))
	c.data([]byte(realm))
	for _, s := range p.NameString {
		c.data([]byte(s))
	}
}
