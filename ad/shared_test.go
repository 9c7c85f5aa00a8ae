package ad_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/internal/testinfra/tcprelay"
)

// dialThroughLink dials the lab as Administrator over LDAPS through a
// relay; the Conn is closed when the test ends.
func dialThroughLink(t *testing.T) (*ad.Conn, *tcprelay.Relay) {
	t.Helper()
	l := theLab.Get(t)
	link := tcprelay.New(t, net.JoinHostPort(l.IP, "636"))
	cfg, err := l.ADConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.URL = "ldaps://" + link.Addr()
	c, err := ad.Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, link
}

// TestConnSharedCancel: two callers share a Conn; one gives up on a call
// the DC has not answered; the other's call in flight on the same
// connection still gets its answer.
func TestConnSharedCancel(t *testing.T) {
	c, link := dialThroughLink(t)
	link.Hold(true)
	impatient, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() { _, err := c.FindAccount(impatient, "alice"); gaveUp <- err }()
	patient := make(chan error, 1)
	go func() {
		a, err := c.FindAccount(context.Background(), "bob")
		if err == nil && a.SAMAccountName != "bob" {
			err = errors.New("not bob: " + a.SAMAccountName)
		}
		patient <- err
	}()
	time.Sleep(200 * time.Millisecond) // both requests are waiting on the held link
	cancel()
	select {
	case err := <-gaveUp:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled call: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the cancelled call did not return")
	}
	link.Hold(false)
	if err := <-patient; err != nil {
		t.Errorf("the other caller's call failed: %v", err)
	}
}

// TestConnRedialsAfterBreak: the connection breaks under the Conn; the next
// call dials and binds again and succeeds.
func TestConnRedialsAfterBreak(t *testing.T) {
	c, link := dialThroughLink(t)
	ctx := context.Background()
	if _, err := c.FindAccount(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	link.Cut()
	deadline := time.Now().Add(5 * time.Second)
	for {
		a, err := c.FindAccount(ctx, "alice")
		if err == nil && a.SAMAccountName == "alice" {
			break
		}
		// The call that meets the broken connection may fail; the next
		// one must not.
		if time.Now().After(deadline) {
			t.Fatalf("no call succeeded after the break: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := c.Close(); err != nil {
		t.Log(err)
	}
	if _, err := c.FindAccount(ctx, "alice"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}

// TestDialFailsOver: the first DC is dead (a port nothing listens on), the
// second is the lab's: Dial binds to the second and says so; the dead one
// costs a refused connection, not a timeout. The rootDSE, the bind and
// every read come from the DC bound to.
func TestDialFailsOver(t *testing.T) {
	l, _, ctx := dial(t)
	cfg, err := l.ADConfig()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "ldaps://" + ln.Addr().String()
	ln.Close()
	cfg.URLs = []string{cfg.URL}
	cfg.URL = dead
	cfg.GCURL = ""
	c, err := ad.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("failover to the live DC: %v", err)
	}
	defer c.Close()
	if c.URL() != l.LDAPSURL() {
		t.Errorf("bound to %s, want %s", c.URL(), l.LDAPSURL())
	}
	if _, err := c.FindAccount(ctx, "Administrator"); err != nil {
		t.Errorf("a read on the DC failed over to: %v", err)
	}
	// Every DC dead: one error naming both.
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead2 := "ldaps://" + ln2.Addr().String()
	ln2.Close()
	cfg.URLs = []string{dead2}
	var de *ad.DialError
	if _, err := ad.Dial(ctx, cfg); !errors.Is(err, ad.ErrNoDC) || !errors.As(err, &de) || len(de.Tried) != 2 {
		t.Errorf("every DC dead: %v", err)
	}
}

// TestPDCEmulator: the lab's one DC holds the role, as samba-tool fsmo show
// says; its host name and site come from its server object.
func TestPDCEmulator(t *testing.T) {
	l, c, ctx := dial(t)
	pdc, err := c.PDCEmulator(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.EqualFold(pdc.DNSHostName, l.HostName) || pdc.Site != "Default-First-Site-Name" || !strings.HasPrefix(pdc.DN, "CN=NTDS Settings,") {
		t.Errorf("PDC emulator: %+v (lab DC %s)", pdc, l.HostName)
	}
	if out := sambaTool(t, l, "fsmo", "show"); !strings.Contains(out, "PdcEmulationMasterRole owner: "+pdc.DN) {
		t.Errorf("samba-tool fsmo show disagrees:\n%s", out)
	}
}
