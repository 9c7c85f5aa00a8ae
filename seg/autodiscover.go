package seg

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// maxAutodiscover bounds an Autodiscover answer the gateway rewrites (they
// are a few hundred bytes).
const maxAutodiscover = 1 << 20

// rewriteAutodiscover replaces the MobileSync server's URL in an
// Autodiscover answer with the gateway's.
func rewriteAutodiscover(resp *http.Response, public string) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAutodiscover+1))
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("reading the Autodiscover answer: %w", err)
	}
	if len(b) > maxAutodiscover {
		return errors.New("the Autodiscover answer is larger than 1 MiB")
	}
	out, err := rewriteAutodiscoverDoc(b, public)
	if err != nil {
		return err
	}
	resp.Body = io.NopCloser(bytes.NewReader(out))
	resp.ContentLength = int64(len(out))
	resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
	resp.Header.Del("Content-Encoding")
	return nil
}

// ErrBadAutodiscover is matched by the error of an Autodiscover answer the
// gateway cannot rewrite (it answers 502 then).
var ErrBadAutodiscover = errors.New("seg: malformed Autodiscover answer")

// rewriteAutodiscoverDoc replaces, in an Autodiscover answer of the MobileSync
// schema, the Url and Name of every Server whose Type is MobileSync with
// url, leaving every other byte of the document as it was (so namespaces
// and prefixes survive, which re-encoding with encoding/xml would not
// guarantee). A document that is not well-formed XML is an error.
func rewriteAutodiscoverDoc(doc []byte, url string) ([]byte, error) {
	type span struct{ from, to int64 }
	var (
		dec      = xml.NewDecoder(bytes.NewReader(doc))
		depth    int
		server   = -1 // depth of the Server element we are in
		kind     string
		field    string // "Type", "Url" or "Name" while inside one of them
		fieldAt  int64
		pending  []span // Url and Name spans of the current Server
		replaces []span
	)
	dec.Strict = true
	for {
		off := dec.InputOffset()
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, errorf("%w: %v", ErrBadAutodiscover, err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			switch {
			case t.Name.Local == "Server" && server < 0:
				server, kind, pending = depth, "", nil
			case server >= 0 && depth == server+1 && (t.Name.Local == "Type" || t.Name.Local == "Url" || t.Name.Local == "Name"):
				field, fieldAt = t.Name.Local, dec.InputOffset()
			}
		case xml.CharData:
			if field == "Type" {
				kind += string(t)
			}
		case xml.EndElement:
			if field != "" && depth == server+1 {
				if field == "Url" || field == "Name" {
					pending = append(pending, span{fieldAt, off})
				}
				field = ""
			}
			if depth == server {
				if strings.TrimSpace(kind) == "MobileSync" {
					replaces = append(replaces, pending...)
				}
				server = -1
			}
			depth--
		}
	}
	if depth != 0 {
		return nil, errorf("%w: unclosed elements", ErrBadAutodiscover)
	}
	var esc bytes.Buffer
	xml.EscapeText(&esc, []byte(url))
	out := make([]byte, 0, len(doc)+len(replaces)*esc.Len())
	last := int64(0)
	for _, s := range replaces {
		out = append(out, doc[last:s.from]...)
		out = append(out, esc.Bytes()...)
		last = s.to
	}
	return append(out, doc[last:]...), nil
}
