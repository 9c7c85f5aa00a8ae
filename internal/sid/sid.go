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

// Parse checks the string form of a SID, "S-1-5-21-...-1104", as the PAC's
// and the directory's are written (decimal, no leading zeros, at most 15
// sub-authorities, an authority below 2^48) and returns it. Anything else,
// including the hexadecimal authority form and a lower-case "s", is
// ErrMalformed: a SID that compares as text must have one spelling.
func Parse(s string) (string, error) {
	rest, ok := strings.CutPrefix(s, "S-1-")
	if !ok || len(s) > 184 {
		return "", ErrMalformed
	}
	parts := strings.Split(rest, "-")
	if len(parts) < 1 || len(parts) > 16 {
		return "", ErrMalformed
	}
	for i, p := range parts {
		if p == "" || len(p) > 1 && p[0] == '0' {
			return "", ErrMalformed
		}
		bits := 32
		if i == 0 {
			bits = 48
		}
		for _, c := range []byte(p) {
			if c < '0' || c > '9' {
				return "", ErrMalformed
			}
		}
		if _, err := strconv.ParseUint(p, 10, bits); err != nil {
			return "", ErrMalformed
		}
	}
	return s, nil
}

// Encode is the binary form of a SID in the string form Parse accepts.
func Encode(s string) ([]byte, error) {
	if _, err := Parse(s); err != nil {
		return nil, err
	}
	parts := strings.Split(strings.TrimPrefix(s, "S-1-"), "-")
	auth, _ := strconv.ParseUint(parts[0], 10, 48)
	b := make([]byte, 8, 8+4*(len(parts)-1))
	b[0], b[1] = 1, byte(len(parts)-1)
	for i := 0; i < 6; i++ {
		b[7-i] = byte(auth >> (8 * i))
	}
	for _, p := range parts[1:] {
		v, _ := strconv.ParseUint(p, 10, 32)
		b = binary.LittleEndian.AppendUint32(b, uint32(v))
	}
	return b, nil
}
