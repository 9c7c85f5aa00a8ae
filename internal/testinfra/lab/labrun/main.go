// Command labrun starts a Samba AD lab, runs one command with the lab
// described in its environment, and tears the lab down when it exits.
//
//	labrun [-dir DIR] [-install] [-share] -- command [args...]
//
// The command sees:
//
//	SEGKCD_LDAP_URL, SEGKCD_GC_URL    ldaps:// URLs of the DC and its global catalog
//	SEGKCD_CA_FILE, SEGKCD_SERVER_NAME the lab CA and the name in the DC's certificate
//	SEGKCD_BIND_USER, SEGKCD_BIND_PASSWORD the domain administrator
//	SEGKCD_REALM, SEGKCD_DOMAIN        Kerberos realm, DNS domain
//	SEGKCD_LAB_DIR, SEGKCD_LAB_USER_PASSWORD  the lab directory, the seeded users' password
//	KRB5_CONFIG                        a krb5.conf pointing at the lab's KDC only
//
// With -dir the lab is kept in DIR and reused by the next run. With -share
// the command also sees SEGKCD_SHARED_LAB (lab.SharedEnv), the lab's
// directory: every test binary it runs attaches to this one DC instead of
// provisioning its own (`make test` runs `go test ./...` so).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/segkcd/segkcd/internal/testinfra/lab"
)

func main() {
	dir := flag.String("dir", "", "keep the lab in this directory and reuse it next time")
	install := flag.Bool("install", false, "apt-get install Samba if it is missing (root)")
	quiet := flag.Bool("q", false, "no progress lines")
	share := flag.Bool("share", false, "let the command's test binaries attach to this lab ("+lab.SharedEnv+")")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: labrun [-dir DIR] [-install] [-share] -- command [args...]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	os.Exit(run(*dir, *install, *quiet, *share, flag.Args()))
}

func run(dir string, install, quiet, share bool, argv []string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	opt := lab.Options{Dir: dir, InstallPackages: install}
	if !quiet {
		opt.Log = os.Stderr
	}
	l, err := lab.Start(ctx, opt)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer l.Close()
	if err := l.Seed(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(),
		"SEGKCD_LDAP_URL="+l.LDAPSURL(),
		"SEGKCD_GC_URL="+l.GCURL(),
		"SEGKCD_CA_FILE="+l.CAFile,
		"SEGKCD_SERVER_NAME="+l.HostName,
		"SEGKCD_BIND_USER="+l.AdminBindName(),
		"SEGKCD_BIND_PASSWORD="+l.AdminPassword,
		"SEGKCD_REALM="+l.Realm,
		"SEGKCD_DOMAIN="+l.DNSDomain,
		"SEGKCD_LAB_DIR="+l.Dir,
		"SEGKCD_LAB_USER_PASSWORD="+lab.UserPassword,
		"KRB5_CONFIG="+l.Krb5Conf,
	)
	if share {
		cmd.Env = append(cmd.Env, lab.SharedEnv+"="+l.Dir)
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
