package kerberos

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/messages"
)

// Transport sends requests to the KDCs of a realm. gokrb5 keeps its own
// sender unexported and without contexts, and its Config.GetKDCs shuffles
// the configuration's own KDC list in place (a data race under concurrent
// use). This one reads the list without changing it and chooses the order
// itself:
//
//   - the KDC that answered last is tried first, so a dead KDC early in the
//     list does not cost every request its timeout;
//   - a KDC that failed (timeout, refused connection, malformed reply) is
//     tried after the others until Backoff has passed;
//   - the rest keep the configuration's order.
//
// Each KDC is tried by UDP or TCP as MIT does (UDP for requests up to
// udp_preference_limit bytes, TCP above), with the other protocol as a
// fallback, TCP on KRB_ERR_RESPONSE_TOO_BIG, each attempt bounded by
// Timeout, all of it by ctx. A reply that is neither a KRB-ERROR nor the
// reply type the request asks for counts as a failure of that KDC, and the
// next one is tried. Methods are safe for concurrent use; set the fields
// before first use.
type Transport struct {
	// Config lists the KDCs ([realms] kdc = ...). With no KDC listed and
	// dns_lookup_kdc on, the realm's _kerberos SRV records are used.
	Config *config.Config
	// Timeout bounds one attempt (connect, send, receive) to one KDC over one
	// protocol. Zero means 3 seconds.
	Timeout time.Duration
	// Backoff is how long a KDC that failed is tried last. Zero means one minute.
	Backoff time.Duration
	// Dialer dials KDCs; nil means a net.Dialer.
	Dialer interface {
		DialContext(ctx context.Context, network, address string) (net.Conn, error)
	}
	// MaxInFlight bounds the exchanges open with one KDC at a time; others
	// wait their turn (within their context). Zero means 8. A gateway whose
	// users all arrive at once (a restart, the morning) would otherwise
	// open a TCP connection per user at the same moment: Samba's KDC listens
	// with a backlog of 10 connections, and each SYN it drops costs the
	// client a one-second retransmission, which with a 3-second Timeout
	// failed users that a queue serves in milliseconds.
	MaxInFlight int
	// Observe, when set, is told of every exchange with a KDC (its address,
	// "udp" or "tcp", how long it took, and the transport error if any; a
	// KRB-ERROR answer is an answer, err nil): for metrics. It must be
	// quick and safe for concurrent use.
	Observe func(kdc, proto string, took time.Duration, err error)

	mu    sync.Mutex
	last  map[string]string               // realm -> KDC that answered last
	until map[string]map[string]time.Time // realm -> KDC -> end of its backoff
	slots map[string]chan struct{}        // KDC -> exchanges in flight
}

// exchangeInTurn waits for one of the KDC's MaxInFlight slots, then
// exchanges. The wait is bounded by ctx only: Timeout starts with the
// exchange, so a queue does not make a healthy KDC look dead.
func (t *Transport) exchangeInTurn(ctx context.Context, proto, addr string, req []byte) ([]byte, error) {
	t.mu.Lock()
	if t.slots == nil {
		t.slots = map[string]chan struct{}{}
	}
	slot, ok := t.slots[addr]
	if !ok {
		n := t.MaxInFlight
		if n <= 0 {
			n = 8
		}
		slot = make(chan struct{}, n)
		t.slots[addr] = slot
	}
	t.mu.Unlock()
	select {
	case slot <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-slot }()
	if t.Observe == nil {
		return t.exchange(ctx, proto, addr, req)
	}
	start := time.Now()
	rep, err := t.exchange(ctx, proto, addr, req)
	t.Observe(addr, proto, time.Since(start), err)
	return rep, err
}

const maxReply = 1 << 20 // a KDC reply larger than 1 MiB is an attack or a bug

// Send delivers one request to a KDC of realm and returns the reply bytes.
// A KRB-ERROR reply is returned as the reply (the caller decodes it), never
// retried elsewhere (another KDC of the realm would answer the same),
// except RESPONSE_TOO_BIG.
func (t *Transport) Send(ctx context.Context, realm string, req []byte) ([]byte, error) {
	rep, _, err := t.send(ctx, realm, req)
	return rep, err
}

// send is Send that also names the KDC that answered.
func (t *Transport) send(ctx context.Context, realm string, req []byte) ([]byte, string, error) {
	if t.Config == nil {
		return nil, "", errors.New("kerberos: Transport has no Config")
	}
	kdcs, err := t.kdcs(ctx, realm)
	if err != nil {
		return nil, "", fmt.Errorf("%w for realm %s: %v", ErrNoKDC, realm, err)
	}
	limit := t.Config.LibDefaults.UDPPreferenceLimit
	if limit <= 0 {
		limit = 1465
	}
	protos := []string{"udp", "tcp"}
	if len(req) > limit {
		protos = []string{"tcp", "udp"}
	}
	want := replyTag(req)
	var errs []string
	for _, addr := range kdcs {
		for _, proto := range protos {
			if err := ctx.Err(); err != nil {
				return nil, "", err
			}
			rep, err := t.exchangeInTurn(ctx, proto, addr, req)
			if err == nil {
				if code, isErr := krbErrorCode(rep); isErr && code == CodeResponseTooBig && proto == "udp" {
					errs = append(errs, addr+"/udp: response too big")
					continue // the TCP attempt follows
				}
				if err = checkReply(rep, want); err == nil {
					t.answered(realm, addr)
					return rep, addr, nil
				}
			}
			if ctx.Err() != nil {
				return nil, "", ctx.Err()
			}
			errs = append(errs, fmt.Sprintf("%s/%s: %v", addr, proto, err))
		}
		t.failed(realm, addr)
	}
	return nil, "", fmt.Errorf("%w for realm %s: %s", ErrNoKDC, realm, strings.Join(errs, "; "))
}

// kdcs lists the realm's KDCs (host:port) in the order to try them.
func (t *Transport) kdcs(ctx context.Context, realm string) ([]string, error) {
	var list []string
	for _, r := range t.Config.Realms {
		if r.Realm == realm {
			for _, k := range r.KDC {
				if k = strings.TrimSpace(k); k == "" {
					continue
				}
				if _, _, err := net.SplitHostPort(k); err != nil {
					k = net.JoinHostPort(k, "88")
				}
				list = append(list, k)
			}
		}
	}
	if len(list) == 0 {
		if !t.Config.LibDefaults.DNSLookupKDC {
			return nil, fmt.Errorf("no KDC configured for realm %s (and dns_lookup_kdc is off)", realm)
		}
		_, srvs, err := net.DefaultResolver.LookupSRV(ctx, "kerberos", "udp", realm)
		if err != nil {
			return nil, err
		}
		for _, s := range srvs { // already in priority and weight order
			list = append(list, net.JoinHostPort(strings.TrimSuffix(s.Target, "."), strconv.Itoa(int(s.Port))))
		}
		if len(list) == 0 {
			return nil, fmt.Errorf("no _kerberos SRV record for realm %s", realm)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	last := t.last[realm]
	var first, good, bad []string
	for _, k := range list {
		switch {
		case k == last:
			first = append(first, k)
		case now.Before(t.until[realm][k]):
			bad = append(bad, k)
		default:
			good = append(good, k)
		}
	}
	return append(append(first, good...), bad...), nil
}

func (t *Transport) answered(realm, addr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.last == nil {
		t.last = map[string]string{}
	}
	t.last[realm] = addr
	delete(t.until[realm], addr)
}

func (t *Transport) failed(realm, addr string) {
	backoff := t.Backoff
	if backoff <= 0 {
		backoff = time.Minute
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.until == nil {
		t.until = map[string]map[string]time.Time{}
	}
	if t.until[realm] == nil {
		t.until[realm] = map[string]time.Time{}
	}
	t.until[realm][addr] = time.Now().Add(backoff)
	if t.last[realm] == addr {
		delete(t.last, realm)
	}
}

// replyTag is the APPLICATION tag byte of the reply a request asks for:
// AS-REQ (10) gets AS-REP (11), TGS-REQ (12) gets TGS-REP (13).
func replyTag(req []byte) byte {
	if len(req) > 0 && (req[0] == 0x6a || req[0] == 0x6c) {
		return req[0] + 1
	}
	return 0
}

// checkReply accepts a KRB-ERROR or a well-formed reply of the wanted type.
func checkReply(rep []byte, want byte) error {
	if len(rep) == 0 {
		return errors.New("empty reply")
	}
	if rep[0] == 0x7e {
		if _, ok := asKRBError(rep); ok {
			return nil
		}
		return fmt.Errorf("%w: malformed KRB-ERROR", ErrBadReply)
	}
	if want == 0 {
		return nil
	}
	if rep[0] != want {
		return fmt.Errorf("%w: reply of type 0x%02x to a request of type 0x%02x", ErrBadReply, rep[0], want-1)
	}
	err := safely(func() error {
		if want == 0x6b {
			var r messages.ASRep
			return r.Unmarshal(rep)
		}
		var r messages.TGSRep
		return r.Unmarshal(rep)
	})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadReply, err)
	}
	return nil
}

// safely runs a gokrb5 parser and turns its panic into an error: what a
// KDC, a file or an attacker hands it must not crash the process.
func safely(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed input (parser panic: %v)", r)
		}
	}()
	return f()
}

func (t *Transport) exchange(ctx context.Context, proto, addr string, req []byte) ([]byte, error) {
	timeout := t.Timeout
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d interface {
		DialContext(ctx context.Context, network, address string) (net.Conn, error)
	} = &net.Dialer{}
	if t.Dialer != nil {
		d = t.Dialer
	}
	conn, err := d.DialContext(actx, proto, addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(actx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if deadline, ok := actx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	if proto == "udp" {
		if _, err := conn.Write(req); err != nil {
			return nil, err
		}
		buf := make([]byte, 65535)
		n, err := conn.Read(buf)
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
	msg := make([]byte, 4+len(req))
	binary.BigEndian.PutUint32(msg, uint32(len(req)))
	copy(msg[4:], req)
	if _, err := conn.Write(msg); err != nil {
		return nil, err
	}
	var hdr [4]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n&0x80000000 != 0 || n > maxReply {
		return nil, fmt.Errorf("reply length %d out of range", n)
	}
	rep := make([]byte, n)
	if _, err := io.ReadFull(conn, rep); err != nil {
		return nil, err
	}
	return rep, nil
}

// krbErrorCode reports whether b is a KRB-ERROR (APPLICATION 30) and its code.
func krbErrorCode(b []byte) (int32, bool) {
	k, ok := asKRBError(b)
	return k.ErrorCode, ok
}

// asKRBError decodes a reply that is a KRB-ERROR.
func asKRBError(b []byte) (messages.KRBError, bool) {
	var k messages.KRBError
	if len(b) == 0 || b[0] != 0x7e {
		return k, false
	}
	if err := safely(func() error { return k.Unmarshal(b) }); err != nil {
		return messages.KRBError{}, false
	}
	return k, true
}
