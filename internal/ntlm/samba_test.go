package ntlm_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"

	"github.com/segkcd/segkcd/internal/ntlm"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
)

// Samba's NTLM acceptor is a real, independent peer for the client half:
// the test binds to the lab DC's plain LDAP port with SASL GSS-SPNEGO
// carrying raw NTLMSSP, which Samba checks (NTLMv2 proof, MIC) against
// alice's real password. The DC then insists on the negotiated security
// layer, so a search only works if our sealing matches Samba's.

var theLab lab.Shared

func TestMain(m *testing.M) { os.Exit(theLab.Run(m)) }

func ldapMessage(id int64, op *ber.Packet) []byte {
	msg := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "LDAPMessage")
	msg.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, id, "id"))
	msg.AppendChild(op)
	return msg.Bytes()
}

func saslBind(id int64, token []byte) []byte {
	bind := ber.Encode(ber.ClassApplication, ber.TypeConstructed, 0, nil, "BindRequest")
	bind.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, 3, "version"))
	bind.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "", "name"))
	auth := ber.Encode(ber.ClassContext, ber.TypeConstructed, 3, nil, "sasl")
	auth.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "GSS-SPNEGO", "mechanism"))
	auth.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, string(token), "credentials"))
	bind.AppendChild(auth)
	return ldapMessage(id, bind)
}

// bindResult returns the result code, diagnostic and server SASL token.
func bindResult(t *testing.T, p *ber.Packet) (int64, string, []byte) {
	t.Helper()
	if len(p.Children) < 2 || len(p.Children[1].Children) < 3 {
		t.Fatalf("not a BindResponse: %s", ber.DecodeString(p.Bytes()))
	}
	r := p.Children[1]
	code, _ := r.Children[0].Value.(int64)
	diag, _ := r.Children[2].Value.(string)
	var creds []byte
	for _, c := range r.Children[3:] {
		if c.ClassType == ber.ClassContext && c.Tag == 7 {
			creds = c.Data.Bytes()
		}
	}
	return code, diag, creds
}

// bind runs the NTLM SASL exchange; tamper may change the AUTHENTICATE.
func bind(t *testing.T, l *lab.Lab, password string, tamper func([]byte)) (net.Conn, *ntlm.Session, int64) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(l.IP, "389"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := &ntlm.Client{User: "alice", Domain: l.Domain, Password: password, TargetName: "ldap/" + l.HostName}
	conn.Write(saslBind(1, c.Negotiate()))
	p, err := ber.ReadPacket(conn)
	if err != nil {
		t.Fatal(err)
	}
	code, diag, challenge := bindResult(t, p)
	if code != 14 || challenge == nil { // saslBindInProgress
		t.Fatalf("NEGOTIATE: result %d %q", code, diag)
	}
	if ch, err := ntlm.ParseChallenge(challenge); err != nil || !strings.EqualFold(ch.TargetName, l.Domain) {
		t.Fatalf("Samba's challenge: %+v %v", ch, err)
	}
	auth, sess, err := c.Authenticate(challenge)
	if err != nil {
		t.Fatal(err)
	}
	if tamper != nil {
		tamper(auth)
	}
	conn.Write(saslBind(2, auth))
	if p, err = ber.ReadPacket(conn); err != nil {
		t.Fatal(err)
	}
	code, _, _ = bindResult(t, p)
	return conn, sess, code
}

func TestSambaRefusals(t *testing.T) {
	l := theLab.Get(t)
	if _, _, code := bind(t, l, "Wrong-Passw0rd!", nil); code != 49 { // invalidCredentials
		t.Fatalf("wrong password: result %d", code)
	}
	// A flipped MIC byte: Samba checks the MIC our client computes.
	if _, _, code := bind(t, l, lab.UserPassword, func(m []byte) { m[72] ^= 1 }); code == 0 {
		t.Fatal("Samba accepted a bad MIC")
	}
}

func TestSambaAcceptsOurNTLM(t *testing.T) {
	l := theLab.Get(t)
	conn, sess, code := bind(t, l, lab.UserPassword, nil)
	if code != 0 {
		t.Fatalf("Samba refused our AUTHENTICATE: result %d", code)
	}

	// A search for alice's UPN, sealed both ways.
	search := ber.Encode(ber.ClassApplication, ber.TypeConstructed, 3, nil, "SearchRequest")
	search.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, l.BaseDN, "base"))
	search.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, 2, "scope"))
	search.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, 0, "deref"))
	search.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, 0, "size"))
	search.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, 0, "time"))
	search.AppendChild(ber.NewBoolean(ber.ClassUniversal, ber.TypePrimitive, ber.TagBoolean, false, "typesOnly"))
	eq := ber.Encode(ber.ClassContext, ber.TypeConstructed, 3, nil, "equalityMatch")
	eq.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "sAMAccountName", "attr"))
	eq.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "alice", "value"))
	search.AppendChild(eq)
	attrs := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "attributes")
	attrs.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "userPrincipalName", "attr"))
	search.AppendChild(attrs)
	sealed, sig := sess.Seal(ldapMessage(3, search))
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(sig)+len(sealed)))
	conn.Write(append(append(frame, sig...), sealed...))

	var found string
	for done := false; !done; {
		var n [4]byte
		if _, err := io.ReadFull(conn, n[:]); err != nil {
			t.Fatalf("reading a sealed reply: %v", err)
		}
		buf := make([]byte, binary.BigEndian.Uint32(n[:]))
		if _, err := io.ReadFull(conn, buf); err != nil || len(buf) < ntlm.SignatureSize {
			t.Fatalf("sealed reply: %v", err)
		}
		plain, err := sess.Unseal(buf[ntlm.SignatureSize:], buf[:ntlm.SignatureSize])
		if err != nil {
			t.Fatalf("Samba's sealed reply does not unseal: %v", err)
		}
		for len(plain) > 0 {
			p, err := ber.DecodePacketErr(plain)
			if err != nil {
				t.Fatal(err)
			}
			plain = plain[len(p.Bytes()):]
			switch op := p.Children[1]; op.Tag {
			case 4: // SearchResultEntry
				found = fmt.Sprint(op.Children[1].Children[0].Children[1].Children[0].Value)
			case 5: // SearchResultDone
				if code, _ := op.Children[0].Value.(int64); code != 0 {
					t.Fatalf("search result %d: %v", code, op.Children[2].Value)
				}
				done = true
			}
		}
	}
	if !strings.HasPrefix(strings.ToLower(found), "alice@") {
		t.Fatalf("alice's UPN read over the sealed connection: %q", found)
	}
}
