package iis_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"os"

	"github.com/segkcd/segkcd/iis"
	"github.com/segkcd/segkcd/winrs"
)

// Windows authentication for KCD on every Client Access server, and the
// gateway's account in IIS_IUSRS.
func Example() {
	ctx := context.Background()
	for _, host := range []string{"cas1.corp.example.com", "cas2.corp.example.com"} {
		sh, err := winrs.New(winrs.Config{Host: host, TLS: &tls.Config{},
			Auth: winrs.NTLM{User: `CORP\admin`, Password: os.Getenv("WINRM_PASSWORD")}})
		if err != nil {
			log.Fatal(err)
		}
		s := &iis.Server{Shell: sh, Name: host}
		for _, vdir := range []string{iis.ActiveSync, iis.EWS} {
			ch, err := s.ConfigureWindowsAuth(ctx, iis.DefaultSite, vdir, iis.WindowsAuthOptions{})
			if err != nil {
				log.Fatal(err)
			}
			fmt.Println(host, ch)
		}
		if _, err := s.AddLocalGroupMember(ctx, iis.IISUsers, `CORP\svc_awseg`); err != nil {
			log.Fatal(err)
		}
	}
}

// cannedShell answers every script with the same output: any winrs.Shell
// can carry the commands (another remoting stack, a bastion).
type cannedShell string

func (c cannedShell) RunPowerShell(ctx context.Context, script string, secrets ...string) (string, error) {
	return string(c), nil
}

func ExampleServer_WindowsAuth() {
	s := &iis.Server{Shell: cannedShell(`{"basic":true,"windows":false,"useKernelMode":true,"useAppPoolCredentials":false,"providers":["Negotiate","NTLM"]}`)}
	w, err := s.WindowsAuth(context.Background(), "", iis.ActiveSync)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("basic=%v windows=%v providers=%v\n", w.BasicEnabled, w.WindowsEnabled, w.Providers)
	fmt.Println(iis.WindowsAuthOptions{}.Want().Providers)
	// Output:
	// basic=true windows=false providers=[Negotiate NTLM]
	// [Negotiate]
}
