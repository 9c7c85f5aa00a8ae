package seg

import (
	"errors"
	"strings"
	"testing"
)

// TestErrorsSaySegOnce (issue 29): an error of seg's with a cause of seg's
// says "seg: " once, and still matches both.
func TestErrorsSaySegOnce(t *testing.T) {
	err := errorf("%w: %w (the certificate carries %s)", ErrBadCredentials, ErrSIDMismatch, "S-1-5-21-1-2")
	want := "seg: credentials refused: the certificate's SID is not the account's (the certificate carries S-1-5-21-1-2)"
	if err.Error() != want {
		t.Errorf("%q, want %q", err, want)
	}
	if !errors.Is(err, ErrBadCredentials) || !errors.Is(err, ErrSIDMismatch) {
		t.Error("the causes are not matched")
	}
	e := &Error{Stage: StageAuthenticate, User: "alice", Err: err}
	if n := strings.Count(e.Error(), "seg: "); n != 1 {
		t.Errorf("%q says seg: %d times", e, n)
	}
	if !errors.Is(e, ErrSIDMismatch) {
		t.Error("*Error does not match its cause")
	}
	if n := strings.Count((&Error{Stage: StageAuthenticate, Err: nameErr("no account of the domain holds it")}).Error(), "seg: "); n != 1 {
		t.Errorf("a name error says seg: %d times", n)
	}
}
