package seg

import (
	"bytes"
	"io"
	"iter"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strings"
)

// What goes to Exchange of a device's request, and what comes back of
// Exchange's answer, the same on both paths: ReverseProxy's for ordinary
// requests, and a long poll's (longPoll), which does without ReverseProxy
// and so does here what ReverseProxy does before Rewrite and after the
// round trip.

// rewrite points a request at its user's Exchange: ReverseProxy's Rewrite,
// and the last step of outboundRequest.
func rewrite(pr *httputil.ProxyRequest) {
	fw := pr.In.Context().Value(ctxKey{}).(*forward)
	pr.SetURL(fw.upstream.URL)
	pr.SetXForwarded()
	// The device's credentials are for the gateway, never for Exchange.
	pr.Out.Header.Del("Authorization")
	pr.Out.Header.Del("Proxy-Authorization")
	// The server answered the device's Expect; the gateway's client sends
	// the body without waiting, and an interim 100 from Exchange would be
	// taken for the start of a long poll's answer, which then could not
	// be parked.
	pr.Out.Header.Del("Expect")
}

// outboundRequest is the request to Exchange for the device's request in,
// as ReverseProxy would send it (hop-by-hop headers dropped, "Te: trailers"
// kept, the device's forwarding headers replaced, rewrite), with fw's body, which was read whole, and a
// Negotiate header for fw's ticket. A request to switch protocols is not
// passed on: nothing the gateway serves switches.
func (h *ProxyHandler) outboundRequest(in *http.Request, fw *forward) (*http.Request, error) {
	out := in.Clone(in.Context())
	out.RequestURI = ""
	out.Body, out.GetBody, out.ContentLength = nil, nil, 0
	if len(fw.body) > 0 {
		body := fw.body
		out.ContentLength = int64(len(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		out.Body, _ = out.GetBody()
	}
	out.Close = false
	removeHopByHop(out.Header)
	if tokenIn(in.Header["Te"], "trailers") {
		out.Header.Set("Te", "trailers")
	}
	out.Header.Del("Forwarded")
	out.Header.Del("X-Forwarded-For")
	out.Header.Del("X-Forwarded-Host")
	out.Header.Del("X-Forwarded-Proto")
	// ReverseProxy also drops the query parameters url.ParseQuery cannot
	// parse; a long poll's query parsed (ParseParams), so it has none.
	rewrite(&httputil.ProxyRequest{In: in, Out: out})
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header.Set("User-Agent", "") // not Go's
	}
	if err := setNegotiate(out, fw); err != nil {
		return nil, err
	}
	return out, nil
}

// hopHeaders are the hop-by-hop headers of RFC 9110 7.6.1 and those that
// ReverseProxy drops with them.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopByHop drops the headers that are one connection's, not the
// message's: those named in Connection, and hopHeaders.
func removeHopByHop(h http.Header) {
	for name := range headerTokens(h["Connection"]) {
		h.Del(name)
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// tokenIn reports whether a comma-separated header's values hold token,
// compared as ASCII without case.
func tokenIn(values []string, token string) bool {
	for t := range headerTokens(values) {
		if equalASCII(t, token) {
			return true
		}
	}
	return false
}

// headerTokens are the non-empty, trimmed elements of a comma-separated
// header's values.
func headerTokens(values []string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, v := range values {
			for _, t := range strings.Split(v, ",") {
				if t = textproto.TrimString(t); t != "" && !yield(t) {
					return
				}
			}
		}
	}
}
