package seg

import (
	"crypto/tls"
	"net/http"
	"time"
)

// NewServer returns the http.Server for the devices' listener, with limits
// that suit ActiveSync: no read or write timeout (a Ping or Sync answer may
// take an hour, an attachment upload longer), but a bound on the time to
// send request headers and on their size, and idle keep-alive connections
// closed after two minutes. tlsConf is used as is; set ClientCAs and
// ClientAuth on it for certificate devices. HTTP/2 is offered to devices
// only when tlsConf.NextProtos lists "h2" (devices' EAS stacks use HTTP/1.1).
func NewServer(h http.Handler, tlsConf *tls.Config) *http.Server {
	s := &http.Server{
		Handler:           h,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
	}
	if tlsConf != nil && !hasProto(tlsConf.NextProtos, "h2") {
		s.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	return s
}

func hasProto(protos []string, p string) bool {
	for _, x := range protos {
		if x == p {
			return true
		}
	}
	return false
}
