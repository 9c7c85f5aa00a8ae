// Package readme reads the examples of the project's README for tests
// that keep them true: a program decodes the JSON the README shows for it.
package readme

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// DecodeJSON decodes, into v, the first ```json block of the README at
// path that comes after marker, refusing fields v does not have.
func DecodeJSON(path, marker string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	i := strings.Index(s, marker)
	if i < 0 {
		return fmt.Errorf("readme: %q is not in %s", marker, path)
	}
	s = s[i:]
	start := strings.Index(s, "```json\n")
	if start < 0 {
		return fmt.Errorf("readme: no JSON block after %q", marker)
	}
	s = s[start+len("```json\n"):]
	end := strings.Index(s, "```")
	if end < 0 {
		return fmt.Errorf("readme: the JSON block after %q does not end", marker)
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(s[:end])))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
