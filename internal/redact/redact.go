// Package redact formats values that hold secrets (passwords, keys) with
// the secrets masked, for the Format methods of segkcd's types: fmt prints
// every field of a struct, unexported ones included, so a type that holds
// a secret must format itself.
package redact

import (
	"fmt"
	"strings"
)

// Mask is what stands in for a secret.
const Mask = "[REDACTED]"

// String is s masked, or "" when there is no secret to hide.
func String(s string) string {
	if s == "" {
		return ""
	}
	return Mask
}

// Bytes is b masked, or nil when there is none.
func Bytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return []byte(Mask)
}

// Format writes masked (a copy of the value with its secrets replaced, of
// a type without methods) for verb, with typeName in place of the copy's
// type name under %#v.
func Format(f fmt.State, verb rune, typeName string, masked any) {
	s := fmt.Sprintf(fmt.FormatString(f, verb), masked)
	if verb == 'v' && f.Flag('#') {
		if i := strings.IndexByte(s, '{'); i >= 0 {
			s = typeName + s[i:]
		}
	}
	fmt.Fprint(f, s)
}
