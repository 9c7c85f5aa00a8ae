package seg

import (
	"container/list"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"
)

// NewServer returns the http.Server for the devices' listener, with limits
// that suit ActiveSync: no read or write timeout (a Ping or Sync answer may
// take an hour, an attachment upload longer), but a bound on the time to
// send request headers and on their size, and idle keep-alive connections
// closed after two minutes. tlsConf is used as is; set ClientCAs and
// ClientAuth on it for certificate devices. HTTP/2 is offered to devices
// only when tlsConf.NextProtos lists "h2" (devices' EAS stacks use HTTP/1.1).
//
// Its ConnState hook bounds the connections that serve no request (new: in
// the TLS handshake or silent after it; idle: kept alive between requests)
// to a quarter of the process's open-file limit, at least 1024: past it,
// the oldest of them is closed. Without it, a flood of connections that
// send nothing held every descriptor for the 30s the handshake may take,
// again and again, and no device could connect (BENCHMARKS.md, the front
// door); one cheap request first would have kept each for IdleTimeout. A
// real device's handshake and request take milliseconds, so it is never
// the oldest new connection; an idle one may be closed under such a flood,
// and the device connects again. Long polls being served, parked or not,
// are not counted. Set ConnState to a function of your own that calls this
// one to keep it.
func NewServer(h http.Handler, tlsConf *tls.Config) *http.Server {
	pending := &pendingConns{max: max(1024, openFileLimit()/4)}
	s := &http.Server{
		Handler:           h,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
		ConnState:         pending.track,
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

// pendingConns are a server's connections that serve no request (new or
// idle), oldest first.
type pendingConns struct {
	max int

	mu   sync.Mutex
	list list.List // of net.Conn
	at   map[net.Conn]*list.Element
}

// track is the server's ConnState hook.
func (p *pendingConns) track(c net.Conn, st http.ConnState) {
	p.mu.Lock()
	if p.at == nil {
		p.at = map[net.Conn]*list.Element{}
	}
	var shed net.Conn
	if e, ok := p.at[c]; ok { // idle again, or active
		p.list.Remove(e)
		delete(p.at, c)
	}
	if st == http.StateNew || st == http.StateIdle {
		p.at[c] = p.list.PushBack(c)
		if p.list.Len() > p.max {
			e := p.list.Front()
			shed = e.Value.(net.Conn)
			p.list.Remove(e)
			delete(p.at, shed)
		}
	}
	p.mu.Unlock()
	if shed != nil {
		// Not on the accept loop: closing a TLS connection may wait to
		// send its close_notify to a peer that reads nothing.
		go shed.Close() // its goroutine sees the error, and the server StateClosed
	}
}
