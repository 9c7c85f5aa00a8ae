package ad_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segkcd/segkcd"
	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/internal/testinfra/lab"
)

// theLab is one Samba AD DC for this test binary, started on first use.
var theLab lab.Shared

func TestMain(m *testing.M) { os.Exit(theLab.Run(m)) }

// dial returns the lab and an administrator connection over LDAPS.
func dial(t *testing.T) (*lab.Lab, *ad.Conn, context.Context) {
	t.Helper()
	l := theLab.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	c, err := l.Dial(ctx)
	if err != nil {
		t.Fatalf("dial lab: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return l, c, ctx
}

// must fails the test on error: must(t)(c.SetSPN(...)).
func must(t *testing.T) func(segkcd.Change, error) segkcd.Change {
	return func(ch segkcd.Change, err error) segkcd.Change {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
}

// expect checks what an operation reported: expect(t, segkcd.Created)(c.SetSPN(...)).
func expect(t *testing.T, want segkcd.Action) func(segkcd.Change, error) {
	return func(ch segkcd.Change, err error) {
		t.Helper()
		wantAction(t, ch, err, want)
	}
}

// wantAction checks what an operation reported.
func wantAction(t *testing.T, ch segkcd.Change, err error, want segkcd.Action) {
	t.Helper()
	if err != nil {
		t.Fatalf("want %s, got error: %v", want, err)
	}
	if ch.Action != want {
		t.Fatalf("want %s, got %s", want, ch)
	}
}

// wantKind checks an error's sentinel and that it is an *ad.Error.
func wantKind(t *testing.T, err, kind error) *ad.Error {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("want %v, got %v", kind, err)
	}
	var e *ad.Error
	if !errors.As(err, &e) {
		t.Fatalf("want *ad.Error, got %T", err)
	}
	if h := e.Hint(); h != "" && !strings.Contains(e.Error(), h) {
		t.Fatalf("the hint %q is not in the message %q", h, e.Error())
	}
	return e
}

// sambaTool runs samba-tool against the lab's database.
func sambaTool(t *testing.T, l *lab.Lab, args ...string) string {
	t.Helper()
	out, err := l.SambaTool(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ldbAttr reads one attribute of the object named by sAMAccountName
// straight from sam.ldb, bypassing LDAP.
func ldbAttr(t *testing.T, l *lab.Lab, sam, attr string) []string {
	t.Helper()
	out, err := l.Ldbsearch(context.Background(), l.BaseDN, "(sAMAccountName="+sam+")", attr)
	if err != nil {
		t.Fatal(err)
	}
	var vals []string
	for _, line := range lab.ScanLines(out) {
		if k, v, ok := strings.Cut(line, ": "); ok && strings.EqualFold(k, attr) {
			vals = append(vals, v)
		}
	}
	return vals
}

// kinit gets a TGT for user with password into a ccache named after it and
// reports MIT kinit's error, if any.
func kinit(t *testing.T, l *lab.Lab, ccache, user, password string, args ...string) error {
	t.Helper()
	cmd := l.Command(context.Background(), ccache, "kinit", append(args, user)...)
	cmd.Stdin = strings.NewReader(password + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return errors.New(strings.TrimSpace(string(out)))
	}
	return nil
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}
