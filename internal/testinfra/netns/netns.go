// Package netns gives a test a Linux network namespace of its own, joined
// to the test's namespace by veth links it can cut and restore: a real
// network fault, on addresses nothing else uses. It needs root (or
// CAP_NET_ADMIN) and iproute2's ip.
package netns

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
)

// NS is a network namespace with its loopback up. Commands run in it
// through Command.
type NS struct {
	Name string
	t    testing.TB
}

var serial atomic.Int64

// New makes a namespace and removes it (and its links) when the test ends.
func New(t testing.TB) *NS {
	t.Helper()
	ns := &NS{Name: fmt.Sprintf("segkcd%d-%d", os.Getpid(), serial.Add(1)), t: t}
	run(t, "ip", "netns", "add", ns.Name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns.Name).Run() })
	ns.run("ip", "link", "set", "lo", "up")
	return ns
}

// Link is a veth pair: Outer in the test's namespace, Inner in NS.
type Link struct {
	ns           *NS
	Outer, Inner string // interface names
	OuterIP      string // the test side's address, e.g. 10.213.0.1
	InnerIP      string // the namespace's, e.g. 10.213.0.2
}

// Link joins the namespace to the test's by a veth pair on a /30: the test
// side gets outerIP, the namespace innerIP. Tests that run at the same
// time must use subnets of their own.
func (ns *NS) Link(outerIP, innerIP string) *Link {
	ns.t.Helper()
	n := serial.Add(1)
	// Names are at most 15 bytes and unique across test processes.
	id := fmt.Sprintf("s%dx%d", os.Getpid()%1000000, n)
	l := &Link{ns: ns, Outer: id + "a", Inner: id + "b", OuterIP: outerIP, InnerIP: innerIP}
	run(ns.t, "ip", "link", "add", l.Outer, "type", "veth", "peer", "name", l.Inner)
	ns.t.Cleanup(func() { exec.Command("ip", "link", "del", l.Outer).Run() })
	run(ns.t, "ip", "link", "set", l.Inner, "netns", ns.Name)
	run(ns.t, "ip", "addr", "add", outerIP+"/30", "dev", l.Outer)
	run(ns.t, "ip", "link", "set", l.Outer, "up")
	ns.run("ip", "addr", "add", innerIP+"/30", "dev", l.Inner)
	ns.run("ip", "link", "set", l.Inner, "up")
	return l
}

// Cut takes the namespace's end of the link down: its route goes, and
// connections over it fail at once (network unreachable).
func (l *Link) Cut() { l.ns.run("ip", "link", "set", l.Inner, "down") }

// Restore brings it up again, with its address and route.
func (l *Link) Restore() { l.ns.run("ip", "link", "set", l.Inner, "up") }

// Command is exec.Command run inside the namespace.
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

func (ns *NS) run(args ...string) {
	ns.t.Helper()
	run(ns.t, "ip", append([]string{"netns", "exec", ns.Name}, args...)...)
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
