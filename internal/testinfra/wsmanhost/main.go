// Command wsmanhost runs the WS-Man test host (a model of a Windows server
// with IIS and an Exchange organisation, not Windows) for the demo.
//
//	wsmanhost -state FILE -exchange CAS1=2019,CAS2=2016 -addr-file FILE
//
// The password of -user comes from $SEGKCD_WINRM_PASSWORD. Like a Windows
// host with WinRM's defaults on its HTTP listener, it takes NTLM with every
// message sealed and refuses anything in clear; -allow-unencrypted also
// takes Basic and unsealed messages (AllowUnencrypted=true).
// It prints its address, keeps its state in FILE after every script, and
// runs until it is signalled.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/winrs/winrstest"
)

func main() {
	statePath := flag.String("state", "", "file that keeps the host's state between runs")
	exch := flag.String("exchange", "CAS1=2019,CAS2=2016", "Exchange servers NAME=2013|2016|2019 the host's organisation knows; empty: none (another server's IIS)")
	name := flag.String("name", "cas1", "the host's computer name")
	user := flag.String("user", `CORP\Administrator`, "the administrator that logs on (NTLM, or Basic with -allow-unencrypted)")
	allow := flag.Bool("allow-unencrypted", false, "also accept Basic and unsealed messages on plain HTTP")
	addrFile := flag.String("addr-file", "", "write host:port here once listening")
	keytabPath := flag.String("keytab", "", "also accept Kerberos (sealed on HTTP) for the HTTP/ service keys in this keytab")
	flag.Parse()
	h := winrstest.NewHost(*name)
	versions := map[string]string{"2013": winrstest.Exchange2013, "2016": winrstest.Exchange2016, "2019": winrstest.Exchange2019}
	for _, kv := range strings.FieldsFunc(*exch, func(r rune) bool { return r == ',' }) {
		name, ver, _ := strings.Cut(kv, "=")
		h.AddExchangeServer(name, versions[ver])
	}
	if *statePath != "" {
		if err := h.LoadState(*statePath); err != nil && !os.IsNotExist(err) {
			fmt.Fprintln(os.Stderr, "wsmanhost:", err)
			os.Exit(1)
		}
		h.AfterRun = func() { h.SaveState(*statePath) }
	}
	srv, err := winrstest.StartWith(h, winrstest.Options{User: *user, Password: os.Getenv("SEGKCD_WINRM_PASSWORD"), AllowUnencrypted: *allow})
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsmanhost:", err)
		os.Exit(1)
	}
	if *keytabPath != "" {
		kt, err := keytab.Load(*keytabPath)
		if err != nil {
			fmt.Fprintln(os.Stderr, "wsmanhost:", err)
			os.Exit(1)
		}
		srv.AcceptKerberos(&kerberos.Acceptor{Keytab: kt})
	}
	if *addrFile != "" {
		os.WriteFile(*addrFile, []byte(srv.Addr()), 0o644)
	}
	fmt.Println("wsmanhost: test host (a model of Windows, not a real Exchange) on", srv.Addr(), "(HTTP; NTLM with sealed messages)")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	srv.Close()
}
