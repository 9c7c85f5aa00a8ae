// Command winrmrun times psremote running one PowerShell script N times on
// a WinRM host with NTLM (sealed on HTTP), for bench/winrm.sh. It prints
// the mean milliseconds per run. The password comes from
// $SEGKCD_WINRM_PASSWORD.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/segkcd/segkcd/internal/psremote"
)

func main() {
	addr := flag.String("addr", "", "host:port of the WinRM listener (HTTP)")
	user := flag.String("user", `CORP\Administrator`, "NTLM user")
	n := flag.Int("n", 200, "runs")
	script := flag.String("script", "", "PowerShell script")
	flag.Parse()
	host, port, err := net.SplitHostPort(*addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	p, _ := strconv.Atoi(port)
	c, err := psremote.New(psremote.Config{Host: host, Port: p, Auth: psremote.AuthNTLM, User: *user,
		Password: os.Getenv("SEGKCD_WINRM_PASSWORD")})
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
