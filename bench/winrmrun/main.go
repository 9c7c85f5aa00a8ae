// Command winrmrun times winrs running one PowerShell script N times on
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

	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/winrs"
)

func main() {
	addr := flag.String("addr", "", "host:port of the WinRM listener (HTTP)")
	user := flag.String("user", `CORP\Administrator`, "NTLM user")
	n := flag.Int("n", 200, "runs")
	script := flag.String("script", "", "PowerShell script")
	auth := flag.String("auth", "ntlm", "ntlm or kerberos")
	realm := flag.String("realm", "", "Kerberos realm (with -auth kerberos)")
	spn := flag.String("spn", "", "the host's service principal, HTTP/host (with -auth kerberos)")
	flag.Parse()
	host, port, err := net.SplitHostPort(*addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	p, _ := strconv.Atoi(port)
	password := os.Getenv("SEGKCD_WINRM_PASSWORD")
	cfg := winrs.Config{Host: host, Port: p, Auth: winrs.NTLM{User: *user, Password: password}}
	if *auth == "kerberos" {
		kcfg, err := kerberos.LoadConfig(os.Getenv("KRB5_CONFIG"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		cfg.Auth = winrs.Kerberos{Client: kerberos.NewWithPassword(*user, *realm, password, kcfg), SPN: *spn}
	}
	c, err := winrs.New(cfg)
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
