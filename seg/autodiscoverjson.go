package seg

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Autodiscover v2 (the JSON form Outlook mobile and iOS Mail ask first):
//
//	GET /autodiscover/autodiscover.json?Email=alice@example.com&Protocol=ActiveSync
//	GET /autodiscover/autodiscover.json/v1.0/alice@example.com?Protocol=ActiveSync
//
// Exchange answers 200 {"Protocol":"ActiveSync","Url":"https://.../Microsoft-Server-ActiveSync"},
// {"Protocol":"AutodiscoverV1","Url":".../autodiscover/autodiscover.xml"} for the
// XML service, and 400 {"ErrorCode":"InvalidProtocol","ErrorMessage":...} for
// a protocol it does not know. The gateway answers itself, with its own
// URLs, and never forwards these requests: Exchange's handling of this path
// was the way in of ProxyShell (CVE-2021-34473).

const autodiscoverJSONPath = "/autodiscover/autodiscover.json"

// isAutodiscoverJSONPath accepts the two forms' paths, in any case.
func isAutodiscoverJSONPath(p string) bool {
	if len(p) < len(autodiscoverJSONPath) || !equalASCII(p[:len(autodiscoverJSONPath)], autodiscoverJSONPath) {
		return false
	}
	rest := p[len(autodiscoverJSONPath):]
	if rest == "" {
		return true
	}
	const v1 = "/v1.0/"
	return len(rest) > len(v1) && equalASCII(rest[:len(v1)], v1) && !strings.Contains(rest[len(v1):], "/")
}

// errBadAutodiscoverJSON is the cause of a malformed Autodiscover v2 request.
var errBadAutodiscoverJSON = errors.New("malformed Autodiscover v2 request")

// autodiscoverJSONRequest is what an Autodiscover v2 request asks.
type autodiscoverJSONRequest struct {
	Email    string
	Protocol string
}

// parseAutodiscoverJSON reads the mailbox address (from the path of the
// /v1.0/ form, else the Email parameter) and the Protocol parameter.
// Parameter names are matched in any case, as Exchange's are; a parameter
// given twice is an error rather than a guess.
func parseAutodiscoverJSON(r *http.Request) (autodiscoverJSONRequest, error) {
	var q autodiscoverJSONRequest
	values, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return q, errorf("%w: query: %v", errBadAutodiscoverJSON, err)
	}
	get := func(name string) (string, error) {
		var found []string
		for k, v := range values {
			if equalASCII(k, name) {
				found = append(found, v...)
			}
		}
		if len(found) > 1 {
			return "", errorf("%w: %s given %d times", errBadAutodiscoverJSON, name, len(found))
		}
		if len(found) == 0 {
			return "", nil
		}
		return found[0], nil
	}
	if q.Protocol, err = get("Protocol"); err != nil {
		return q, err
	}
	if len(r.URL.Path) > len(autodiscoverJSONPath) {
		// The /v1.0/<address> form; r.URL.Path is already unescaped.
		q.Email = r.URL.Path[len(autodiscoverJSONPath)+len("/v1.0/"):]
	} else if q.Email, err = get("Email"); err != nil {
		return q, err
	}
	at := strings.LastIndexByte(q.Email, '@')
	switch {
	case q.Email == "":
		return q, errorf("%w: no mailbox address", errBadAutodiscoverJSON)
	case len(q.Email) > 320 || !utf8.ValidString(q.Email) || strings.ContainsFunc(q.Email, isControl):
		return q, errorf("%w: the mailbox address is not one", errBadAutodiscoverJSON)
	case at <= 0 || at == len(q.Email)-1:
		return q, errorf("%w: the mailbox address has no domain", errBadAutodiscoverJSON)
	case q.Protocol == "":
		return q, errorf("%w: no Protocol", errBadAutodiscoverJSON)
	}
	return q, nil
}

// autodiscoverJSON answers an authenticated, authorized Autodiscover v2
// request with the gateway's URL for the protocol asked, when the gateway
// serves it.
func (h *ProxyHandler) autodiscoverJSON(w *statusWriter, r *http.Request, line *logLine, q autodiscoverJSONRequest) {
	base := h.publicBase(r.Host)
	var answer struct {
		Protocol string `json:"Protocol"`
		URL      string `json:"Url"`
	}
	supported := []string{"ActiveSync", "AutodiscoverV1"}
	if h.EWS {
		supported = append(supported, "Ews")
	}
	switch {
	case equalASCII(q.Protocol, "ActiveSync"):
		answer.Protocol, answer.URL = "ActiveSync", base+easPath
	case equalASCII(q.Protocol, "AutodiscoverV1"):
		answer.Protocol, answer.URL = "AutodiscoverV1", base+"/autodiscover/autodiscover.xml"
	case h.EWS && equalASCII(q.Protocol, "Ews"):
		answer.Protocol, answer.URL = "Ews", base+"/EWS/Exchange.asmx"
	default:
		line.err = &Error{Stage: StageRequest, Status: http.StatusBadRequest, User: line.user,
			Err: errorf("%w: protocol %q is not served", errBadAutodiscoverJSON, printable(q.Protocol))}
		writeJSON(w, http.StatusBadRequest, map[string]string{"ErrorCode": "InvalidProtocol",
			"ErrorMessage": fmt.Sprintf("The given protocol value '%s' is invalid. Supported values are '%s'",
				alphanumeric(q.Protocol), strings.Join(supported, ","))})
		return
	}
	writeJSON(w, http.StatusOK, answer)
}

// alphanumeric keeps the first 64 ASCII letters and digits of s, so that
// nothing a client sent is echoed into the answer as it was.
func alphanumeric(s string) string {
	var b strings.Builder
	for _, c := range s {
		if b.Len() == 64 {
			break
		}
		if c < utf8.RuneSelf && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b.WriteRune(c)
		}
	}
	return b.String()
}
