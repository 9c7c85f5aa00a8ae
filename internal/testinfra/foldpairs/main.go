// Command foldpairs asks a Samba AD DC which account names it keeps apart
// that Go's Unicode upper-casing joins. It is how seg's identity tests chose
// their pairs: by asking the directory, not by guessing.
//
//	go run ./internal/testinfra/foldpairs [-out FILE] [-max N]
//
// It starts a lab of its own (root, Samba 4.22, see scripts/lab deps) and,
// for every letter r whose upper case u in Go's tables (unicode.ToUpper,
// which is what seg's names were keyed by before they were keyed by SID)
// differs from r and has r as its lower case, creates the account
// "fp" + r + "x" and then "fp" + u + "x" over LDAPS. When the DC accepts the
// second, it keeps the two names apart: two accounts that Go's folding would
// make one. When it refuses it (entry exists, or a constraint), AD folds them
// too. The result, one line per pair, goes to -out (default stdout):
//
//	U+10D0 U+1C90 apart
//
// with a header naming the Samba version. seg/testdata/foldpairs.txt is its
// output; seg's lab tests read it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
	"unicode"

	"github.com/go-ldap/ldap/v3"

	"github.com/segkcd/segkcd/internal/testinfra/lab"
)

func main() {
	out := flag.String("out", "", "write the pairs to this file (default stdout)")
	max := flag.Int("max", 0, "probe at most this many pairs (0: all)")
	flag.Parse()
	if err := run(*out, *max); err != nil {
		fmt.Fprintln(os.Stderr, "foldpairs:", err)
		os.Exit(1)
	}
}

// Pair is a lower-case letter and the upper case Go's tables give it.
type Pair struct{ Lower, Upper rune }

// candidates are the letters Go upper-cases to another letter whose lower
// case is the letter itself: the pairs a key built with unicode.ToUpper
// joins.
func candidates() []Pair {
	var ps []Pair
	for r := rune(0x80); r <= unicode.MaxRune; r++ {
		if !unicode.IsLetter(r) {
			continue
		}
		u := unicode.ToUpper(r)
		if u != r && unicode.ToLower(u) == r {
			ps = append(ps, Pair{r, u})
		}
	}
	return ps
}

func run(outPath string, max int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "foldpairs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	l, err := lab.Start(ctx, lab.Options{Dir: dir, Log: os.Stderr})
	if err != nil {
		return err
	}
	defer l.Close()
	tc, err := l.TLSConfig()
	if err != nil {
		return err
	}
	conn, err := ldap.DialURL(l.LDAPSURL(), ldap.DialWithTLSConfig(tc))
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.Bind(l.AdminUser+"@"+l.DNSDomain, l.AdminPassword); err != nil {
		return err
	}
	ps := candidates()
	if max > 0 && max < len(ps) {
		ps = ps[:max]
	}
	w := io.Writer(os.Stdout)
	if outPath != "" {
		f, err := os.Create(outPath)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	version, _ := exec.Command("samba", "--version").Output()
	fmt.Fprintf(w, "# Account names Samba %s keeps apart (apart) or folds (joined), of the %d letters\n",
		strings.TrimSpace(strings.TrimPrefix(string(version), "Version ")), len(ps))
	fmt.Fprintf(w, "# that Go %s upper-cases to another letter. Made by go run ./internal/testinfra/foldpairs on %s.\n",
		strings.TrimPrefix(runtimeVersion(), "go"), time.Now().UTC().Format("2006-01-02"))
	apart, joined := 0, 0
	for i, p := range ps {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		lo, up := "fp"+string(p.Lower)+"x", "fp"+string(p.Upper)+"x"
		if err := addUser(conn, l.BaseDN, fmt.Sprintf("fp-%x-lo", p.Lower), lo); err != nil {
			return fmt.Errorf("U+%04X: the first account: %w", p.Lower, err)
		}
		verdict := "apart"
		if err := addUser(conn, l.BaseDN, fmt.Sprintf("fp-%x-up", p.Lower), up); err != nil {
			if !ldap.IsErrorAnyOf(err, ldap.LDAPResultEntryAlreadyExists, ldap.LDAPResultConstraintViolation, ldap.LDAPResultAttributeOrValueExists) {
				return fmt.Errorf("U+%04X: the second account: %w", p.Upper, err)
			}
			verdict = "joined"
			joined++
		} else {
			apart++
		}
		fmt.Fprintf(w, "U+%04X U+%04X %s\n", p.Lower, p.Upper, verdict)
		if (i+1)%200 == 0 {
			fmt.Fprintf(os.Stderr, "foldpairs: %d of %d (%d apart, %d joined)\n", i+1, len(ps), apart, joined)
		}
	}
	fmt.Fprintf(os.Stderr, "foldpairs: %d pairs: %d apart, %d joined\n", len(ps), apart, joined)
	return nil
}

// addUser adds a user without a password (a disabled account is enough to
// hold a name).
func addUser(conn *ldap.Conn, baseDN, cn, sam string) error {
	req := ldap.NewAddRequest("CN="+ldap.EscapeDN(cn)+",CN=Users,"+baseDN, nil)
	req.Attribute("objectClass", []string{"top", "person", "organizationalPerson", "user"})
	req.Attribute("sAMAccountName", []string{sam})
	return conn.Add(req)
}

func runtimeVersion() string { return runtime.Version() }
