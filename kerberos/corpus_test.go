package kerberos_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/jcmturner/gokrb5/v8/messages"

	"github.com/segkcd/segkcd/kerberos"
)

// recordingDialer keeps every KDC reply (TCP framing removed).
type recordingDialer struct {
	mu       sync.Mutex
	replies  [][]byte
	requests [][]byte
}

func (d *recordingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &recConn{Conn: c, d: d, tcp: network == "tcp"}, nil
}

type recConn struct {
	net.Conn
	d   *recordingDialer
	tcp bool
	buf bytes.Buffer
}

func (c *recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.buf.Write(p[:n])
	return n, err
}

func (c *recConn) Write(p []byte) (int, error) {
	req := p
	if c.tcp && len(req) > 4 {
		req = req[4:]
	}
	c.d.mu.Lock()
	c.d.requests = append(c.d.requests, append([]byte(nil), req...))
	c.d.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *recConn) Close() error {
	b := c.buf.Bytes()
	if c.tcp && len(b) > 4 {
		b = b[4:]
	}
	if len(b) > 0 {
		c.d.mu.Lock()
		c.d.replies = append(c.d.replies, append([]byte(nil), b...))
		c.d.mu.Unlock()
	}
	return c.Conn.Close()
}

// With the lab's AES session keys, S4U2Self carries PA-FOR-USER and
// PA-S4U-X509-USER; Samba 4.17 ignores the latter and answers.
func TestS4USendsBothUserPAData(t *testing.T) {
	e := setup(t)
	d := &recordingDialer{}
	c := e.clientVia(&kerberos.Transport{Config: e.cfg, Dialer: d})
	if _, err := c.S4U2Self(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	last := d.requests[len(d.requests)-1]
	var req messages.TGSReq
	if err := req.Unmarshal(last); err != nil {
		t.Fatal(err)
	}
	if !req.PAData.Contains(129) || !req.PAData.Contains(130) {
		t.Fatalf("padata %+v", req.PAData)
	}
}

// TestWriteFuzzCorpus refreshes the fuzz seed corpora from the lab when
// SEGKCD_WRITE_CORPUS=1; otherwise it only checks the exchanges work.
func TestWriteFuzzCorpus(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	d := &recordingDialer{}
	c := e.clientVia(&kerberos.Transport{Config: e.cfg, Dialer: d})
	tk, err := c.Impersonate(ctx, "alice", e.mailSPN)
	if err != nil {
		t.Fatal(err)
	}
	c.Impersonate(ctx, "alice", e.otherSPN)   // BADOPTION
	c.Impersonate(ctx, "alice", e.unknownSPN) // S_PRINCIPAL_UNKNOWN
	n, err := kerberos.NewNegotiation(tk, true)
	if err != nil {
		t.Fatal(err)
	}
	acc := &kerberos.Acceptor{Keytab: exportKeytab(t, e, asaName+"$"), Principal: asaName + "$"}
	id, err := acc.Accept(n.Header)
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("SEGKCD_WRITE_CORPUS") != "1" {
		return
	}
	write := func(target, name, literal string) {
		dir := filepath.Join("testdata", "fuzz", target)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, name), []byte("go test fuzz v1\n"+literal+"\n"), 0o644)
	}
	for i, r := range d.replies {
		write("FuzzKDCReply", fmt.Sprintf("lab-reply-%02d", i), fmt.Sprintf("[]byte(%q)", r))
	}
	write("FuzzNegotiate", "lab-negotiate-init", fmt.Sprintf("string(%q)", n.Header))
	write("FuzzNegotiate", "lab-negotiate-mutual-reply", fmt.Sprintf("string(%q)", id.ReplyHeader))
	write("FuzzNegotiate", "basic", fmt.Sprintf("string(%q)", "Basic YWxpY2U6cHc="))
	write("FuzzNegotiate", "empty-negotiate", fmt.Sprintf("string(%q)", "Negotiate "))
}
