package kerberos

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/messages"
)

// Transport sends requests to the KDCs of a realm. gokrb5 keeps its own
// sender unexported and without contexts; this one tries every KDC the
// configuration lists, in order, each by UDP or TCP as MIT does (UDP for
// requests up to udp_preference_limit bytes, TCP above), falls back to the
// other protocol when one fails, switches to TCP on KRB_ERR_RESPONSE_TOO_BIG,
// bounds each attempt by Timeout, and stops when ctx is done.
type Transport struct {
	// Config lists the KDCs ([realms] kdc = ...).
	Config *config.Config
	// Timeout bounds one attempt (connect, send, receive) to one KDC over one
	// protocol. Zero means 3 seconds.
	Timeout time.Duration
	// Dialer dials KDCs; nil means a net.Dialer.
	Dialer interface {
		DialContext(ctx context.Context, network, address string) (net.Conn, error)
	}
}

const maxReply = 1 << 20 // a KDC reply larger than 1 MiB is an attack or a bug

// Send delivers one request to a KDC of realm and returns the reply bytes.
// A KRB-ERROR reply is returned as a *KDCError, never retried elsewhere
// (another KDC of the realm would answer the same), except RESPONSE_TOO_BIG.
func (t *Transport) Send(ctx context.Context, realm string, req []byte) ([]byte, error) {
	if t.Config == nil {
		return nil, errors.New("kerberos: Transport has no Config")
	}
	_, kdcs, err := t.Config.GetKDCs(realm, true)
	if err != nil || len(kdcs) == 0 {
		return nil, fmt.Errorf("%w for realm %s: %v", ErrNoKDC, realm, err)
	}
	limit := t.Config.LibDefaults.UDPPreferenceLimit
	if limit <= 0 {
		limit = 1465
	}
	protos := []string{"udp", "tcp"}
	if len(req) > limit {
		protos = []string{"tcp", "udp"}
	}
	var errs []string
	for i := 1; i <= len(kdcs); i++ {
		addr, ok := kdcs[i]
		if !ok {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			addr = net.JoinHostPort(addr, "88")
		}
		for _, proto := range protos {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			rep, err := t.exchange(ctx, proto, addr, req)
			if err == nil {
				if code, isErr := krbErrorCode(rep); isErr && code == CodeResponseTooBig && proto == "udp" {
					errs = append(errs, addr+"/udp: response too big")
					continue // the TCP attempt follows
				}
				return rep, nil
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			errs = append(errs, fmt.Sprintf("%s/%s: %v", addr, proto, err))
		}
	}
	return nil, fmt.Errorf("%w for realm %s: %s", ErrNoKDC, realm, strings.Join(errs, "; "))
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
	if len(b) == 0 || b[0] != 0x7e {
		return 0, false
	}
	var k messages.KRBError
	if err := k.Unmarshal(b); err != nil {
		return 0, false
	}
	return k.ErrorCode, true
}

// asKRBError decodes a reply that is a KRB-ERROR.
func asKRBError(b []byte) (messages.KRBError, bool) {
	var k messages.KRBError
	if len(b) == 0 || b[0] != 0x7e {
		return k, false
	}
	if err := k.Unmarshal(b); err != nil {
		return k, false
	}
	return k, true
}
