// Package sid reads Windows security identifiers in their binary form
// (MS-DTYP 2.4.2.2), for the ad and kerberos packages.
package sid

import (
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
)

// ErrMalformed is returned for bytes that are not one whole SID.
var ErrMalformed = errors.New("malformed SID")

// Decode returns the string form of a binary SID, "S-1-5-21-...".
func Decode(b []byte) (string, error) {
	if len(b) < 8 {
		return "", ErrMalformed
	}
	n := int(b[1])
	if b[0] != 1 || len(b) != 8+4*n {
		return "", ErrMalformed
	}
	var auth uint64
	for _, v := range b[2:8] {
		auth = auth<<8 | uint64(v)
	}
	var s strings.Builder
	s.WriteString("S-1-")
	s.WriteString(strconv.FormatUint(auth, 10))
	for i := 0; i < n; i++ {
		s.WriteByte('-')
		s.WriteString(strconv.FormatUint(uint64(binary.LittleEndian.Uint32(b[8+4*i:])), 10))
	}
	return s.String(), nil
}
