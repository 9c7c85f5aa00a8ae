package main

import (
	"encoding/binary"
	"io"
	"net"

	"github.com/segkcd/segkcd/internal/testinfra/kdcspy"
)

// kdcRelay forwards TCP Kerberos traffic to the KDC and counts the
// requests it carries (kdcspy): the gateway runs in a process of its own,
// so the count is taken on the wire, as the KDC sees it.
type kdcRelay struct {
	addr string
	kdc  string
	kdcspy.Counter
}

func newKDCRelay(kdc string) (*kdcRelay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &kdcRelay{addr: ln.Addr().String(), kdc: kdc}
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
		r.Observe(msg)
		if _, err := up.Write(append(n[:], msg...)); err != nil {
			return
		}
	}
}
