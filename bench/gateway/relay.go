package main

import (
	"encoding/binary"
	"io"
	"net"
	"sync"

	"github.com/jcmturner/gokrb5/v8/messages"
)

// kdcRelay forwards TCP Kerberos traffic to the KDC and counts the S4U
// requests it carries, by decoding each TGS-REQ: PA-FOR-USER (129) is
// S4U2Self, an additional ticket is S4U2Proxy. A request sent again after
// a timeout (the same nonce) counts once and is reported apart.
type kdcRelay struct {
	addr   string
	kdc    string
	mu     sync.Mutex
	self   int
	proxy  int
	nonces map[int]bool
	resent int
}

func newKDCRelay(kdc string) (*kdcRelay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &kdcRelay{addr: ln.Addr().String(), kdc: kdc, nonces: map[int]bool{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.serve(c)
		}
	}()
	return r, nil
}

func (r *kdcRelay) serve(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", r.kdc)
	if err != nil {
		return
	}
	defer up.Close()
	go io.Copy(c, up)
	for {
		var n [4]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return
		}
		msg := make([]byte, binary.BigEndian.Uint32(n[:]))
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		r.count(msg)
		if _, err := up.Write(append(n[:], msg...)); err != nil {
			return
		}
	}
}

func (r *kdcRelay) count(msg []byte) {
	var req messages.TGSReq
	if req.Unmarshal(msg) != nil {
		return
	}
	self := false
	for _, pa := range req.PAData {
		self = self || pa.PADataType == 129
	}
	proxy := len(req.ReqBody.AdditionalTickets) > 0
	if !self && !proxy {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nonces[req.ReqBody.Nonce] {
		r.resent++
		return
	}
	r.nonces[req.ReqBody.Nonce] = true
	if proxy {
		r.proxy++
	} else {
		r.self++
	}
}

func (r *kdcRelay) counts() (self, proxy int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.self, r.proxy
}

func (r *kdcRelay) retransmissions() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resent
}
