package wsman

import (
	"encoding/xml"
	"strconv"
	"strings"
)

// ParseCLIXML turns PowerShell's serialized stderr ("#< CLIXML" then
// <Objs>) into text: the error stream's strings, with the _xHHHH_ escapes
// decoded; progress records are dropped. Text that is not CLIXML comes back
// trimmed as it is.
func ParseCLIXML(stderr string) string {
	s := strings.TrimSpace(stderr)
	if !strings.HasPrefix(s, "#< CLIXML") {
		return s
	}
	s = strings.TrimSpace(strings.TrimPrefix(s, "#< CLIXML"))
	dec := xml.NewDecoder(strings.NewReader(s))
	var out strings.Builder
	var inErr bool
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch t := tok.(type) {
		case xml.StartElement:
			inErr = false
			if t.Name.Local == "S" {
				for _, a := range t.Attr {
					if a.Name.Local == "S" && strings.EqualFold(a.Value, "Error") {
						inErr = true
					}
				}
			}
		case xml.CharData:
			if inErr {
				out.WriteString(unescapeCLIXML(string(t)))
			}
		case xml.EndElement:
			inErr = false
		}
	}
	return strings.TrimSpace(out.String())
}

// unescapeCLIXML decodes _xHHHH_ (a UTF-16 code unit, e.g. _x000D__x000A_ for CRLF).
func unescapeCLIXML(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		if i+7 <= len(s) && s[i] == '_' && s[i+1] == 'x' && s[i+6] == '_' {
			if v, err := strconv.ParseUint(s[i+2:i+6], 16, 16); err == nil {
				if v == '\r' {
					// CRLF becomes LF
				} else {
					b.WriteRune(rune(v))
				}
				i += 7
				continue
			}
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}
