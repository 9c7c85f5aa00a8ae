package seg_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"time"

	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/seg"
)

// A gateway for certificate and Basic devices in front of one Exchange
// namespace. The service account svc_awseg holds protocol transition and
// may delegate to HTTP/mail.corp.example.com (see package ad).
func ExampleProxyHandler() {
	cfg, err := kerberos.NewConfig("CORP.EXAMPLE.COM", "dc1.corp.example.com", "dc2.corp.example.com")
	if err != nil {
		log.Fatal(err)
	}
	kdcs := &kerberos.Transport{Config: cfg}
	svc := kerberos.NewWithPassword("svc_awseg", "CORP.EXAMPLE.COM", "password from a file", cfg)
	svc.Transport = kdcs

	// The KDC says which account holds each name a device presents: a
	// UPN's prefix is no account name.
	names := seg.Names{Realm: "CORP.EXAMPLE.COM", NetBIOS: "CORP", Suffixes: []string{"example.com"},
		Accounts: &seg.Accounts{Resolver: svc}}
	// The authenticators use the ProxyHandler's Names.
	certs := &seg.CertificateAuth{Revocation: &seg.CRL{Files: []string{"/etc/seg/devices.crl"}}}
	basic := &seg.BasicAuth{Realm: "CORP.EXAMPLE.COM", Config: cfg, Transport: kdcs, Service: svc, TTL: 5 * time.Minute}

	target, _ := url.Parse("https://mail.corp.example.com")
	gw := &seg.ProxyHandler{
		Upstreams:    []*seg.Upstream{{URL: target}}, // SPN: HTTP/mail.corp.example.com
		Tickets:      &kerberos.Cache{Source: svc},
		Authenticate: seg.AnyOf(certs.Authenticate, basic.Authenticate),
		Names:        names,
	}

	deviceCAs := x509.NewCertPool() // the MDM's device CA certificates
	srv := seg.NewServer(gw, &tls.Config{ClientCAs: deviceCAs, ClientAuth: tls.VerifyClientCertIfGiven})
	srv.Addr = ":443"
	fmt.Println(srv.MaxHeaderBytes, srv.ReadTimeout, srv.WriteTimeout)
	// log.Fatal(srv.ListenAndServeTLS("/etc/seg/gateway.crt", "/etc/seg/gateway.key"))
	// Output: 32768 0s 0s
}

// Names reads what a device presents without asking the directory: a UPN
// stays whole for the KDC to resolve (Names.Accounts), DOMAIN\user and bare
// names are account names.
func ExampleNames_Principal() {
	n := seg.Names{Realm: "CORP.EXAMPLE.COM", NetBIOS: "CORP", Suffixes: []string{"example.com"}}
	for _, name := range []string{"j.doe@EXAMPLE.COM", `CORP\jdoe`, "jdoe@CORP.EXAMPLE.COM", "jdoe@elsewhere.org"} {
		p, err := n.Principal(name)
		fmt.Println(p, err != nil)
	}
	// Output:
	// j.doe@example.com false
	// jdoe false
	// jdoe@corp.example.com false
	//  true
}

// ParseParams reads the base64 query form that iOS and Windows Phone
// devices send.
func ExampleParseParams() {
	p, err := seg.ParseParams(mustRequest("/Microsoft-Server-ActiveSync?jAAJBAREZXYxBAEAAAAGaVBob25lCAVhbGljZQ=="))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.Cmd, p.User, p.DeviceID, p.DeviceType, p.ProtocolVersion, p.PolicyKey)
	// Output: Sync alice Dev1 iPhone 14.0 1
}

func mustRequest(target string) *http.Request {
	return httptest.NewRequest(http.MethodPost, target, nil)
}

// A device policy from a file, as the handler's Authorize hook, with a
// decision looked up the way the admin API does.
func ExamplePolicy() {
	policy := &seg.Policy{BlockStatus: 456, Names: seg.Names{Realm: "CORP.EXAMPLE.COM"}}
	rules, err := seg.ParsePolicy([]byte(`{"block": {"device_types": ["BlackBerry"]},
		"devices": {"ALICE1": {"user": "alice", "managed": true}},
		"rules": {"require_managed": true}}`))
	if err != nil {
		log.Fatal(err)
	}
	policy.Set(rules) // PolicyFile.Run or PolicyHTTP.Run do this in the background
	for _, in := range []seg.PolicyInput{
		{User: "alice", DeviceID: "ALICE1", DeviceType: "iPhone"},
		{User: "alice", DeviceID: "NEWPHONE", DeviceType: "iPhone"},
		{User: "alice", DeviceID: "ALICE1", DeviceType: "BlackBerry"},
	} {
		d := policy.Decide(in)
		fmt.Println(in.DeviceID, in.DeviceType, d.Allow, d.Rule)
	}
	// gw.Authorize = policy.Authorize
	// Output:
	// ALICE1 iPhone true rules
	// NEWPHONE iPhone false rules.require_managed
	// ALICE1 BlackBerry false block.device_types
}

// Stopping a gateway: the server's Shutdown waits for the requests it holds
// and ends the parked long polls whose answer has not begun (503: the
// phones ask another replica); the handler's waits for the parked answers
// that have begun, within the same deadline.
func ExampleProxyHandler_Shutdown() {
	gw := &seg.ProxyHandler{} // Upstreams, Tickets, Authenticate: see ExampleProxyHandler
	srv := seg.NewServer(gw, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(ln)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Print(err)
	}
	if err := gw.Shutdown(ctx); err != nil {
		log.Print("parked long polls cut: ", err)
	}
	fmt.Println("stopped")
	// Output: stopped
}

// A device certificate's SID, in the extension a Windows CA writes and in
// the SAN URI Intune writes: what CertificateAuth compares with the SID in
// the PAC of the account its UPN resolves to.
func ExampleParseSIDExtension() {
	ext, err := seg.MarshalSIDExtension("S-1-5-21-3623811015-3361044348-30300820-1013")
	if err != nil {
		log.Fatal(err)
	}
	sid, err := seg.ParseSIDExtension(ext)
	fmt.Println(sid, err)
	sid, ok, err := seg.SIDFromURI(seg.SIDURI("S-1-5-21-3623811015-3361044348-30300820-1013"))
	fmt.Println(sid, ok, err)
	_, err = seg.ParseSIDExtension([]byte{0x30, 0x00})
	fmt.Println(err)
	// Output:
	// S-1-5-21-3623811015-3361044348-30300820-1013 <nil>
	// S-1-5-21-3623811015-3361044348-30300820-1013 true <nil>
	// seg: malformed SID in the certificate: SID extension: no SID
}

// Certificates mapped as Windows DCs have required since 2025: the SID in
// the certificate, or a strong altSecurityIdentities entry read over LDAPS.
func ExampleCertificateAuth_strongMapping() {
	var dir *ad.Conn // ad.Dial(ctx, ad.Config{URL: "ldaps://dc1.corp.example.com", ...})
	names := seg.Names{Realm: "CORP.EXAMPLE.COM", Accounts: &seg.Accounts{Resolver: nil /* a *kerberos.Client */}}
	certs := &seg.CertificateAuth{Names: names, Mapping: seg.MappingFull}
	if dir != nil {
		certs.Directory = dir
	}
	mode, _ := seg.ParseCertificateMapping("compatibility")
	fmt.Println(certs.Mapping, mode)
	// Output: full compatibility
}

// A gateway behind HAProxy (send-proxy-v2, TLS passed through): the
// client's address, which failed logins are counted by, comes from the
// balancer's header, and the balancer alone is believed.
func ExampleProxyProtocolListener() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	l := &seg.ProxyProtocolListener{Listener: ln, Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	defer l.Close()
	go func() { // the balancer
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			panic(err)
		}
		defer c.Close()
		io.WriteString(c, "PROXY TCP4 192.0.2.7 198.51.100.1 51234 443\r\n")
		time.Sleep(100 * time.Millisecond)
	}()
	c, err := l.Accept()
	if err != nil {
		panic(err)
	}
	defer c.Close()
	fmt.Println(c.RemoteAddr()) // srv := seg.NewServer(gw, tlsConf); srv.ServeTLS(l, "", "")
	// Output: 192.0.2.7:51234
}
