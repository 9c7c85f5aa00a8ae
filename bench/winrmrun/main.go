// Command winrmrun times psremote running one PowerShell script N times on
// a WinRM host with NTLM or Kerberos (sealed on HTTP), for bench/winrm.sh
// and bench/winrm-kerberos.sh. It prints the mean milliseconds per run.
// The password comes from $SEGKCD_WINRM_PASSWORD; Kerberos reads
// $KRB5_CONFIG and takes -realm and -spn.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/config"

	"github.com/segkcd/segkcd/internal/psremote"
)

func main() {
	addr := flag.String("addr", "", "host:port of the WinRM listener (HTTP)")
	user := flag.String("user", `CORP\Administrator`, "NTLM user")
	n := flag.Int("n", 200, "runs")
	script := flag.String("script", "", "PowerShell script")
	auth := flag.String("auth", psremote.AuthNTLM, "ntlm or kerberos")
	realm := flag.String("realm", "", "Kerberos realm (with -auth kerberos)")
	spn := flag.String("spn", "", "the host's service principal, HTTP/host (with -auth kerberos)")
	flag.Parse()
	host, port, err := net.SplitHostPort(*addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	p, _ := strconv.Atoi(port)
	cfg := psremote.Config{Host: host, Port: p, Auth: *auth, User: *user, Password: os.Getenv("SEGKCD_WINRM_PASSWORD"), SPN: *spn}
	if *auth == psremote.AuthKerberos {
		kcfg, err := config.Load(os.Getenv("KRB5_CONFIG"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		cfg.Kerberos = client.NewWithPassword(*user, *realm, cfg.Password, kcfg, client.DisablePAFXFAST(true))
	}
	c, err := psremote.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx := context.Background()
	if _, err := c.RunPowerShell(ctx, *script); err != nil { // logon, outside the timing
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	start := time.Now()
	for i := 0; i < *n; i++ {
		if _, err := c.RunPowerShell(ctx, *script); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	fmt.Printf("%.3f\n", float64(time.Since(start).Microseconds())/1000/float64(*n))
}
