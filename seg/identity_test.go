package seg_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/internal/testinfra/eastest"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
	"github.com/segkcd/segkcd/internal/testinfra/testpki"
	"github.com/segkcd/segkcd/seg"
)

// identityPairs are letters Go's Unicode tables upper-case into one another
// while the lab's Samba keeps them apart as account names: the report's
// Georgian pair first, then five from other scripts. Each must be "apart" in
// testdata/foldpairs.txt, which go run ./internal/testinfra/foldpairs wrote
// by asking a lab (788 such pairs of 1,355).
var identityPairs = [][2]rune{
	{0x10D0, 0x1C90},   // Georgian an, Mkhedruli and Mtavruli: geoაx and geoᲐx
	{0x0219, 0x0218},   // Latin s with comma below (Romanian)
	{0x0371, 0x0370},   // Greek heta
	{0xAB70, 0x13A0},   // Cherokee a
	{0x2C30, 0x2C00},   // Glagolitic azu
	{0x10428, 0x10400}, // Deseret long i (outside the BMP: a surrogate pair to AD)
}

// pairNames are the two account names of a pair: geoაx and geoᲐx.
func pairNames(p [2]rune) (string, string) {
	return "geo" + string(p[0]) + "x", "geo" + string(p[1]) + "x"
}

// checkPairsApart reads testdata/foldpairs.txt: each pair used here must be
// one the lab was seen to keep apart.
func checkPairsApart(t *testing.T) {
	f, err := os.Open("testdata/foldpairs.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	verdict := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) == 3 && !strings.HasPrefix(fs[0], "#") {
			verdict[fs[0]+" "+fs[1]] = fs[2]
		}
	}
	for _, p := range identityPairs {
		if k := fmt.Sprintf("U+%04X U+%04X", p[0], p[1]); verdict[k] != "apart" {
			t.Fatalf("%s is %q in testdata/foldpairs.txt, not apart", k, verdict[k])
		}
	}
}

// testIdentityPairs: two accounts whose names Go's Unicode tables join but
// AD keeps apart are two users through the whole gateway, in either order,
// cold and cached: by certificate (with the mapping in compatibility and no
// SID in the certificates, so that the name alone decides, and in full mode
// with SIDs), by Basic, and in the EAS User parameter; and for each pair
// the policy's allow and block lists, a 451 redirect and the per-user bound
// on held Pings are the account's own.
func testIdentityPairs(t *testing.T, r *rig) {
	checkPairsApart(t)
	ctx := context.Background()
	c, err := r.lab.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range identityPairs {
		lo, up := pairNames(p)
		for _, n := range []string{lo, up} {
			if _, err := c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: n, Password: lab.UserPassword,
				UserPrincipalName: n + "@" + r.lab.DNSDomain, PasswordNeverExpires: true}); err != nil {
				t.Fatalf("%q: %v", n, err)
			}
		}
		if r.sidOf(t, lo) == r.sidOf(t, up) {
			t.Fatalf("%q and %q are one account in the lab", lo, up)
		}
	}
	c.Close()

	// A gateway whose certificates are mapped in compatibility mode, and
	// devices whose certificates carry no SID: the name is all there is.
	names := r.handler.Names
	compat := &seg.CertificateAuth{Names: names, Mapping: seg.MappingCompatibility}
	basic := &seg.BasicAuth{Realm: r.lab.Realm, Config: r.krb5, Names: names}
	byName := r.serve(t, r.handlerWith(func(h *seg.ProxyHandler) { h.Authenticate = seg.AnyOf(compat.Authenticate, basic.Authenticate) }))
	dom := r.lab.DNSDomain
	url := func(base, cmd, user, device string) string {
		return strings.Replace(r.easURL(cmd, user, device), r.gateway.URL, base, 1)
	}
	for _, p := range identityPairs {
		lo, up := pairNames(p)
		plain := map[string]*http.Client{}
		withSID := map[string]*http.Client{}
		for _, n := range []string{lo, up} {
			cert, err := r.ca.DeviceFor(testpki.DeviceSpec{UPN: n + "@" + dom})
			if err != nil {
				t.Fatal(err)
			}
			plain[n] = r.device(t, cert)
			withSID[n] = r.deviceFor(t, n)
		}
		for _, order := range [][2]string{{lo, up}, {up, lo}} {
			// Cold: nothing remembered of either name, no ticket.
			r.accounts.Forget()
			r.forget(t, lo)
			r.forget(t, up)
			for _, state := range []string{"cold", "cached"} {
				for _, who := range order {
					for _, user := range []string{who + "@" + dom, who, ""} {
						a := post(t, plain[who], url(byName.URL, "FolderSync", user, "ID-"+who), "")
						if a.status != http.StatusOK || a.user != who {
							t.Errorf("%s certificate of %q (%s first, %s), User=%q: %d, Exchange saw %q", state, who, order[0], state, user, a.status, a.user)
						}
					}
					rq, _ := http.NewRequest(http.MethodPost, url(byName.URL, "Sync", who+"@"+dom, "ID-B-"+who), nil)
					rq.SetBasicAuth(who+"@"+dom, lab.UserPassword)
					if a := do(t, r.device(t, nil), rq); a.status != http.StatusOK || a.user != who {
						t.Errorf("%s Basic %q (%s first): %d, Exchange saw %q", state, who, order[0], a.status, a.user)
					}
					if a := post(t, withSID[who], r.easURL("FolderSync", who, "ID-S-"+who), ""); a.status != http.StatusOK || a.user != who {
						t.Errorf("%s certificate with SID of %q (%s first): %d, Exchange saw %q", state, who, order[0], a.status, a.user)
					}
				}
			}
			// Each names the other in User=: refused, plain and base64.
			for i, who := range order {
				other := order[1-i]
				for _, user := range []string{other, other + "@" + dom} {
					if a := post(t, plain[who], url(byName.URL, "Sync", user, "ID-X"), ""); a.status != http.StatusForbidden {
						t.Errorf("%q's device, User=%q: %d %q", who, user, a.status, a.user)
					}
				}
				rq, _ := http.NewRequest(http.MethodPost, strings.Replace(base64Query(r, other), r.gateway.URL, byName.URL, 1), nil)
				if a := do(t, plain[who], rq); a.status != http.StatusForbidden {
					t.Errorf("%q's device, base64 User=%q: %d %q", who, other, a.status, a.user)
				}
			}
		}
		testPairPolicy(t, r, lo, up, plain)
		testPair451(t, r, lo, up, withSID)
		testPairPollBound(t, r, lo, up, plain)
	}
}

// testPairPolicy: an allow entry for one and a block entry for the other
// are the accounts' own; written the other way round, too.
func testPairPolicy(t *testing.T, r *rig, lo, up string, devices map[string]*http.Client) {
	t.Helper()
	for _, tc := range [][2]string{{lo, up}, {up, lo}} {
		allowed, blocked := tc[0], tc[1]
		policy := &seg.Policy{Names: r.handler.Names}
		if err := policy.Set(&seg.PolicyRules{Rules: seg.PolicyChecks{RequireManaged: true},
			Allow: seg.PolicyList{Users: []string{allowed}}, Block: seg.PolicyList{Users: []string{blocked + "@" + r.lab.DNSDomain}}}); err != nil {
			t.Fatal(err)
		}
		if u := policy.Unresolved(); len(u) != 0 {
			t.Errorf("unresolved: %+v", u)
		}
		compat := &seg.CertificateAuth{Names: r.handler.Names, Mapping: seg.MappingCompatibility}
		srv := r.serve(t, r.handlerWith(func(h *seg.ProxyHandler) { h.Authenticate = compat.Authenticate; h.Authorize = policy.Authorize }))
		if a := post(t, devices[allowed], strings.Replace(r.easURL("Sync", allowed, "POL-"+allowed), r.gateway.URL, srv.URL, 1), ""); a.status != http.StatusOK || a.user != allowed {
			t.Errorf("policy allows %q: %d %q", allowed, a.status, a.user)
		}
		if a := post(t, devices[blocked], strings.Replace(r.easURL("Sync", blocked, "POL-"+blocked), r.gateway.URL, srv.URL, 1), ""); a.status != http.StatusForbidden {
			t.Errorf("policy blocks %q: %d %q", blocked, a.status, a.user)
		}
		srv.Close()
	}
}

// testPair451: a 451 that sends one account to a second server sends only
// that account there.
func testPair451(t *testing.T, r *rig, lo, up string, devices map[string]*http.Client) {
	t.Helper()
	second := eastest.NewServer(r.asa)
	defer second.Close()
	u1, _ := url.Parse(r.exchange.URL)
	u2, _ := url.Parse(second.URL)
	redirects := &seg.Redirects{}
	srv := r.serve(t, r.handlerWith(func(h *seg.ProxyHandler) {
		h.Upstreams = []*seg.Upstream{{URL: u1, SPN: r.spn}, {URL: u2, SPN: r.spn2}}
		h.Redirects = redirects
	}))
	defer srv.Close()
	at := func(who string) string {
		return strings.Replace(r.easURL("Sync", who, "R-"+who), r.gateway.URL, srv.URL, 1)
	}
	r.exchange.Redirect(lo, second.URL+"/Microsoft-Server-ActiveSync")
	defer r.exchange.Redirect(lo, "")
	if a := post(t, devices[lo], at(lo), ""); a.status != 451 {
		t.Fatalf("%q: %d, want 451", lo, a.status)
	}
	before := second.Stats().Requests
	if a := post(t, devices[up], at(up), ""); a.status != http.StatusOK || a.user != up {
		t.Errorf("%q after %q's 451: %d %q", up, lo, a.status, a.user)
	}
	if n := second.Stats().Requests - before; n != 0 {
		t.Errorf("%q went to %q's server", up, lo)
	}
	if a := post(t, devices[lo], at(lo), ""); a.status != http.StatusOK || a.user != lo || second.Stats().Requests-before != 1 {
		t.Errorf("%q after its 451: %d %q", lo, a.status, a.user)
	}
	if l := redirects.List(); len(l) != 1 || l[0].SID != r.sidOf(t, lo) {
		t.Errorf("redirects: %+v", l)
	}
}

// testPairPollBound: with one held Ping per user, each account holds its
// own; the other's Ping does not end it.
func testPairPollBound(t *testing.T, r *rig, lo, up string, devices map[string]*http.Client) {
	t.Helper()
	compat := &seg.CertificateAuth{Names: r.handler.Names, Mapping: seg.MappingCompatibility}
	srv := r.serve(t, r.handlerWith(func(h *seg.ProxyHandler) { h.Authenticate = compat.Authenticate; h.MaxLongPollsPerUser = 1 }))
	defer srv.Close()
	ping := func(who string) heldPing {
		return holdPing(devices[who], strings.Replace(r.easURL("Ping", who, "PB-"+who), r.gateway.URL, srv.URL, 1))
	}
	first := ping(lo)
	waitHeld(t, r, lo)
	second := ping(up)
	waitHeld(t, r, up)
	select {
	case st := <-first.status:
		t.Errorf("%q's Ping ended when %q's began: %d", lo, up, st)
	case <-time.After(300 * time.Millisecond):
	}
	first.cancel()
	second.cancel()
	<-first.status
	<-second.status
}

// waitHeld waits until Exchange's stand-in holds a request of who.
func waitHeld(t *testing.T, r *rig, who string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case u := <-r.exchange.Held():
			if u == who {
				return
			}
		case <-deadline:
			t.Fatalf("no held Ping of %q", who)
		}
	}
}

// modify replaces (or with no values clears) an attribute of the account
// named name, or with attr "" gives its object the new RDN values[0], over
// LDAPS as the domain's administrator, as an admin's tool would.
func (r *rig) modify(t *testing.T, name, attr string, values ...string) {
	t.Helper()
	c, ctx := r.dial(t)
	a, err := c.FindAccount(ctx, name)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	tc, err := r.lab.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	l, err := ldap.DialURL(r.lab.LDAPSURL(), ldap.DialWithTLSConfig(tc))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Bind(r.lab.AdminUser+"@"+r.lab.DNSDomain, r.lab.AdminPassword); err != nil {
		t.Fatal(err)
	}
	if attr == "" { // a new RDN
		if err := l.ModifyDN(ldap.NewModifyDNRequest(a.DN, values[0], true, "")); err != nil {
			t.Fatalf("renaming %s: %v", name, err)
		}
		return
	}
	m := ldap.NewModifyRequest(a.DN, nil)
	if len(values) == 0 {
		m.Delete(attr, nil)
	} else {
		m.Replace(attr, values)
	}
	if err := l.Modify(m); err != nil {
		t.Fatalf("%s of %s: %v", attr, name, err)
	}
}

func (r *rig) newAccount(t *testing.T, name, upn string) string {
	t.Helper()
	c, ctx := r.dial(t)
	defer c.Close()
	if _, err := c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: name, Password: lab.UserPassword,
		UserPrincipalName: upn, PasswordNeverExpires: true}); err != nil {
		t.Fatal(err)
	}
	return r.sidOf(t, name)
}

// testStrongMapping: KB5014754's strong mapping through the whole gateway on
// the lab: a certificate carrying another account's SID (extension and SAN
// URI) or a deleted account's is refused in every mode; one without a SID
// is refused in full mode unless the account's altSecurityIdentities (read
// over LDAPS) names it, and served in compatibility and off unless it is
// older than its account; a UPN moved to another account while both
// devices keep syncing passes to the new holder at once, and never serves
// one account's device as the other.
func testStrongMapping(t *testing.T, r *rig) {
	dom := r.lab.DNSDomain
	bobSID := r.sidOf(t, "bob")
	gone := r.newAccount(t, "gone1", "gone1@"+dom)
	if out, err := r.lab.SambaTool(context.Background(), "user", "delete", "gone1"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	ctx := context.Background()
	dirConn, err := r.lab.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer dirConn.Close()
	gateway := func(mode seg.CertificateMapping) string {
		certs := &seg.CertificateAuth{Names: r.handler.Names, Mapping: mode, Directory: dirConn, Metrics: r.handler.Metrics,
			Logger: r.handler.Logger}
		return r.serve(t, r.handlerWith(func(h *seg.ProxyHandler) { h.Authenticate = certs.Authenticate })).URL
	}
	modes := map[seg.CertificateMapping]string{seg.MappingFull: gateway(seg.MappingFull),
		seg.MappingCompatibility: gateway(seg.MappingCompatibility), seg.MappingOff: gateway(seg.MappingOff)}
	sync := func(base string, cert *testpki.Issued, user string) answer {
		return post(t, r.device(t, cert), strings.Replace(r.easURL("Sync", user, "MAP-"+user), r.gateway.URL, base, 1), "")
	}
	issue := func(spec testpki.DeviceSpec) *testpki.Issued {
		c, err := r.ca.DeviceFor(spec)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	alice := "alice@" + dom
	for _, tc := range []struct {
		name string
		cert *testpki.Issued
	}{
		{"bob's SID in the extension", issue(testpki.DeviceSpec{UPN: alice, SID: bobSID, SIDIn: testpki.SIDExtension})},
		{"bob's SID as a SAN URI", issue(testpki.DeviceSpec{UPN: alice, SID: bobSID, SIDIn: testpki.SIDURI})},
		{"a deleted account's SID", issue(testpki.DeviceSpec{UPN: alice, SID: gone, SIDIn: testpki.SIDExtension | testpki.SIDURI})},
		{"a deleted account's own certificate", issue(testpki.DeviceSpec{UPN: "gone1@" + dom, SID: gone, SIDIn: testpki.SIDExtension})},
	} {
		for mode, base := range modes {
			if a := sync(base, tc.cert, "alice"); a.status != http.StatusForbidden {
				t.Errorf("%s, mode %s: %d, Exchange saw %q", tc.name, mode, a.status, a.user)
			}
		}
	}
	aliceSID := r.sidOf(t, "alice")
	for _, form := range []testpki.SIDPlace{testpki.SIDExtension, testpki.SIDURI} {
		for mode, base := range modes {
			if a := sync(base, issue(testpki.DeviceSpec{UPN: alice, SID: aliceSID, SIDIn: form}), "alice"); a.status != http.StatusOK || a.user != "alice" {
				t.Errorf("alice's own SID (form %d), mode %s: %d %q", form, mode, a.status, a.user)
			}
		}
	}
	// Dated now: alice's account is younger than the CA's usual hour of
	// backdating, and compatibility mode refuses older certificates.
	noSID := issue(testpki.DeviceSpec{UPN: alice, NotBefore: time.Now()})
	for mode, want := range map[seg.CertificateMapping]int{seg.MappingFull: 403, seg.MappingCompatibility: 200, seg.MappingOff: 200} {
		if a := sync(modes[mode], noSID, "alice"); a.status != want {
			t.Errorf("no SID, mode %s: %d, want %d", mode, a.status, want)
		}
	}
	if !logHas(r, "result=no_strong_mapping", "event 39") {
		t.Error("no log line for the certificate without a strong mapping")
	}
	// A strong altSecurityIdentities entry (issuer and serial, as Windows
	// writes it) maps a certificate without a SID in full mode; an
	// account created after the certificate refuses it in compatibility.
	mappedName := fmt.Sprintf("mapped%d", userSeq.Add(1))
	upn := mappedName + "@" + dom
	r.newAccount(t, mappedName, upn)
	cert := issue(testpki.DeviceSpec{UPN: upn})
	serial := cert.Cert.SerialNumber.Bytes()
	for i, j := 0, len(serial)-1; i < j; i, j = i+1, j-1 {
		serial[i], serial[j] = serial[j], serial[i]
	}
	if a := sync(modes[seg.MappingFull], cert, mappedName); a.status != http.StatusForbidden {
		t.Errorf("full mode before the mapping: %d", a.status)
	}
	r.modify(t, mappedName, "altSecurityIdentities", "X509:<I>CN=segkcd test device CA<SR>"+fmt.Sprintf("%x", serial))
	// The directory's answers are remembered for five minutes: a gateway
	// of its own sees the new entry.
	if a := sync(gateway(seg.MappingFull), cert, mappedName); a.status != http.StatusOK || a.user != mappedName {
		t.Errorf("full mode with altSecurityIdentities: %d %q", a.status, a.user)
	}
	old := issue(testpki.DeviceSpec{UPN: upn, NotBefore: time.Now().Add(-72 * time.Hour)})
	if a := sync(modes[seg.MappingCompatibility], old, mappedName); a.status != http.StatusForbidden {
		t.Errorf("a certificate older than its account, compatibility: %d", a.status)
	}
	if !logHas(r, "result=predates_account", "event 40") {
		t.Error("no log line for the certificate older than its account")
	}
	testMovedUPN(t, r)
}

// testMovedUPN: the UPN mover@<alternative suffix> passes from one account
// to another while a device of each keeps syncing with a certificate that
// carries the UPN and its own account's SID. Before the move only the old
// holder is served, after it only the new one, and no answer is ever the
// other account's.
func testMovedUPN(t *testing.T, r *rig) {
	n := userSeq.Add(1)
	upn := fmt.Sprintf("mover%d@%s", n, altSuffix)
	oldName, newName := fmt.Sprintf("mvold%d", n), fmt.Sprintf("mvnew%d", n)
	oldSID := r.newAccount(t, oldName, upn)
	newSID := r.newAccount(t, newName, "")
	devices := map[string]*http.Client{}
	for name, sid := range map[string]string{oldName: oldSID, newName: newSID} {
		c, err := r.ca.DeviceFor(testpki.DeviceSpec{UPN: upn, SID: sid, SIDIn: testpki.SIDExtension})
		if err != nil {
			t.Fatal(err)
		}
		devices[name] = r.device(t, c)
	}
	type result struct {
		device string
		a      answer
		at     time.Time
	}
	results := make(chan result, 4096)
	stop := make(chan struct{})
	done := make(chan struct{})
	for name, c := range devices {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				results <- result{name, post(t, c, r.easURL("Sync", upn, "MOVE-"+name), ""), time.Now()}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	time.Sleep(time.Second)
	moved := time.Now()
	r.modify(t, oldName, "userPrincipalName")
	r.modify(t, newName, "userPrincipalName", upn)
	time.Sleep(7 * time.Second) // past Accounts.MinRefresh (5 s)
	close(stop)
	<-done
	<-done
	close(results)
	var last = map[string]answer{}
	counts := map[string]int{}
	for res := range results {
		a := res.a
		switch {
		case a.status == http.StatusOK && a.user != res.device:
			t.Errorf("%s's device was served as %q", res.device, a.user)
		case res.at.Before(moved) && res.device == oldName && a.status != http.StatusOK:
			t.Errorf("the old holder before the move: %d", a.status)
		case res.at.Before(moved) && res.device == newName && a.status != http.StatusForbidden && a.status != http.StatusServiceUnavailable:
			t.Errorf("the new holder before the move: %d", a.status)
		}
		counts[res.device+" "+strconv.Itoa(a.status)]++
		last[res.device] = a
	}
	if last[newName].status != http.StatusOK || last[newName].user != newName {
		t.Errorf("the new holder after the move: %d %q", last[newName].status, last[newName].user)
	}
	if last[oldName].status != http.StatusForbidden {
		t.Errorf("the old holder after the move: %d %q", last[oldName].status, last[oldName].user)
	}
	t.Logf("answers by device and status: %v", counts)
}

// testRenamedAccount: an account that used the gateway by Basic is renamed
// and a new account takes its old name. The new account's password for the
// name is never taken as the old account's (whose SID the gateway still
// remembers for the name, and whose ticket it still holds): the first try
// is refused for a retry (503), the next is the new account's own; the old
// account goes on under its new name, and neither password opens the
// other's name.
func testRenamedAccount(t *testing.T, r *rig) {
	dom := r.lab.DNSDomain
	n := userSeq.Add(1)
	name, renamed := fmt.Sprintf("ren%d", n), fmt.Sprintf("ren%dold", n)
	const newPassword = "Another-Passw0rd-For-The-Name!"
	oldSID := r.newAccount(t, name, name+"@"+dom)
	basic := func(login, password, device string) answer {
		rq, _ := http.NewRequest(http.MethodPost, r.easURL("Sync", "", device), nil)
		rq.SetBasicAuth(login, password)
		return do(t, r.device(t, nil), rq)
	}
	if a := basic(name, lab.UserPassword, "REN-A1"); a.status != http.StatusOK || a.user != name {
		t.Fatalf("before the rename: %d %q", a.status, a.user)
	}
	r.modify(t, name, "userPrincipalName", renamed+"@"+dom)
	r.modify(t, name, "sAMAccountName", renamed)
	r.modify(t, renamed, "", "CN="+renamed) // its object too, for the new account's
	c, ctx := r.dial(t)
	if _, err := c.CreateServiceAccount(ctx, ad.ServiceAccountRequest{Name: name, Password: newPassword,
		UserPrincipalName: name + "@" + dom, PasswordNeverExpires: true}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	newSID := r.sidOf(t, name)
	if newSID == oldSID || r.sidOf(t, renamed) != oldSID {
		t.Fatalf("the rename: %s %s %s", oldSID, newSID, r.sidOf(t, renamed))
	}
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; ; i++ {
		device := fmt.Sprintf("REN-C%d", i)
		a := basic(name, newPassword, device)
		if a.status == http.StatusOK {
			if !logHas(r, "device="+device, "sid="+newSID, "status=200") {
				t.Errorf("the new account's login was served as another SID than %s", newSID)
			}
			break
		}
		if a.status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("the new account's login, try %d: %d", i, a.status)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if countLines(r, "sid="+oldSID, "status=200", "device=REN-C") != 0 {
		t.Error("the new account's password was served as the old account")
	}
	if a := basic(renamed, lab.UserPassword, "REN-A2"); a.status != http.StatusOK || !logHas(r, "device=REN-A2", "sid="+oldSID, "status=200") {
		t.Errorf("the old account under its new name: %d %q", a.status, a.user)
	}
	if a := basic(renamed, newPassword, "REN-X1"); a.status != http.StatusUnauthorized {
		t.Errorf("the new account's password for the old account's new name: %d", a.status)
	}
	if a := basic(name, lab.UserPassword, "REN-X2"); a.status != http.StatusUnauthorized {
		t.Errorf("the old account's password for its old name: %d", a.status)
	}
}

// testExchangeAuthHeaders: Exchange's Negotiate answer (a mutual
// authentication token) and Persistent-Auth never reach the device.
func testExchangeAuthHeaders(t *testing.T, r *rig) {
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("WWW-Authenticate", "Negotiate oYGZMIGWoAMKAQChCwYJKoZIgvcSAQICon")
		w.Header().Set("Persistent-Auth", "true")
		io.WriteString(w, "ok")
	}))
	defer up.Close()
	target, _ := url.Parse(up.URL)
	srv := r.serve(t, r.handlerWith(func(h *seg.ProxyHandler) {
		h.Upstreams = []*seg.Upstream{{URL: target, SPN: r.spn}}
		h.Transport = &seg.UserPools{TLSClientConfig: up.Client().Transport.(*http.Transport).TLSClientConfig}
	}))
	a := post(t, r.deviceFor(t, "alice"), strings.Replace(r.easURL("FolderSync", "alice", "AUTHHDR"), r.gateway.URL, srv.URL, 1), "")
	if a.status != http.StatusOK || a.body != "ok" {
		t.Fatalf("%d %q", a.status, a.body)
	}
	for _, h := range []string{"WWW-Authenticate", "Persistent-Auth"} {
		if v := a.header.Get(h); v != "" {
			t.Errorf("the device got %s: %s", h, v)
		}
	}
}
