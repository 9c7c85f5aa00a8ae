// Package gssaccept runs MIT krb5's gss_accept_sec_context on a token, as an
// acceptor independent of ours: the small C program in c/gssaccept.c, built
// with the system's compiler and libkrb5-dev (scripts/lab deps installs
// them). Tests use it to show that segkcd's Negotiate tokens, and their
// channel bindings, are what MIT accepts, and that a token bound to another
// channel is refused with GSS_S_BAD_BINDINGS.
package gssaccept

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Acceptor is the built program.
type Acceptor struct{ path string }

// Build compiles the acceptor into dir.
func Build(ctx context.Context, dir string) (*Acceptor, error) {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return nil, errors.New("gssaccept: cannot find the C source")
	}
	src := filepath.Join(filepath.Dir(self), "c", "gssaccept.c")
	out := filepath.Join(dir, "gssaccept")
	cmd := exec.CommandContext(ctx, "gcc", "-O2", "-Wall", "-o", out, src, "-lgssapi_krb5", "-lkrb5")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("gssaccept: build (needs gcc and libkrb5-dev: scripts/lab deps): %v\n%s", err, b)
	}
	return &Acceptor{path: out}, nil
}

// Result is what the acceptor said.
type Result struct {
	Accepted bool
	Client   string // the initiator's name, when accepted
	Status   string // the GSS major status, when refused (GSS_S_BAD_BINDINGS, ...)
	Output   string
}

// Accept gives the initial context token (SPNEGO or Kerberos, not base64)
// to gss_accept_sec_context with the keys of keytab (a file path) and, when
// appData is not nil, input channel bindings with that application data.
func (a *Acceptor) Accept(ctx context.Context, keytab string, token, appData []byte) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var args []string
	if appData != nil {
		args = append(args, hex.EncodeToString(appData))
	}
	cmd := exec.CommandContext(ctx, a.path, args...)
	// No replay cache file: each token is fresh, and the tests leave nothing behind.
	cmd.Env = append(os.Environ(), "KRB5_KTNAME=FILE:"+keytab, "KRB5RCACHENAME=none:")
	cmd.Stdin = bytes.NewReader(token)
	out, err := cmd.CombinedOutput()
	r := Result{Output: strings.TrimSpace(string(out))}
	var exit *exec.ExitError
	switch {
	case err == nil && strings.HasPrefix(r.Output, "accepted "):
		r.Accepted, r.Client = true, strings.TrimPrefix(r.Output, "accepted ")
		return r, nil
	case errors.As(err, &exit) && exit.ExitCode() == 1 && strings.HasPrefix(r.Output, "refused "):
		r.Status, _, _ = strings.Cut(strings.TrimPrefix(r.Output, "refused "), " ")
		return r, nil
	}
	return r, fmt.Errorf("gssaccept: %v: %s", err, r.Output)
}
