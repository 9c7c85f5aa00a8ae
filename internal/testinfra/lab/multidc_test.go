package lab

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// Two DCs of one domain replicate both ways, and Samba's DNS serves the
// domain's SRV records with both.
func TestAddDC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	opt := Options{MultiDC: true, InstallPackages: os.Getenv("CI") == "true"}
	if testing.Verbose() {
		opt.Log = os.Stderr
	}
	dc1, err := Start(ctx, opt)
	if err != nil {
		unavailable(t, err, os.Getenv("CI") == "true")
	}
	defer dc1.Close()
	dc2, err := dc1.AddDC(ctx, "dc2")
	if err != nil {
		t.Fatal(err)
	}
	defer dc2.Close()

	res := Resolver(dc1, dc2)
	_, srvs, err := res.LookupSRV(ctx, "ldap", "tcp", "dc._msdcs."+dc1.DNSDomain)
	if err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, s := range srvs {
		targets = append(targets, strings.TrimSuffix(s.Target, "."))
	}
	slices.Sort(targets)
	if want := []string{dc1.HostName, dc2.HostName}; !slices.Equal(targets, want) {
		t.Fatalf("SRV targets %v, want %v", targets, want)
	}
	addrs, err := res.LookupHost(ctx, dc2.HostName)
	if err != nil || !slices.Contains(addrs, dc2.IP) {
		t.Fatalf("%s: %v %v", dc2.HostName, addrs, err)
	}

	// A user made on DC1 reaches DC2, and one made on DC2 reaches DC1.
	t0 := time.Now()
	if out, err := dc1.SambaTool(ctx, "user", "add", "repl1", "Repl-1-Passw0rd!"); err != nil {
		t.Fatal(out, err)
	}
	if out, err := dc2.SambaTool(ctx, "user", "add", "repl2", "Repl-2-Passw0rd!"); err != nil {
		t.Fatal(out, err)
	}
	for _, c := range []struct {
		dc   *Lab
		user string
	}{{dc2, "repl1"}, {dc1, "repl2"}} {
		for {
			out, _ := c.dc.Ldbsearch(ctx, c.dc.BaseDN, "(sAMAccountName="+c.user+")", "dn")
			if strings.Contains(out, "CN="+c.user) {
				break
			}
			if time.Since(t0) > 30*time.Second {
				t.Fatalf("%s never reached %s", c.user, c.dc.host)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Logf("replicated both ways within %s", time.Since(t0).Round(10*time.Millisecond))
}
