package winrs

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/masterzen/winrm"

	"github.com/segkcd/segkcd/internal/wsman"
)

// Config says how to reach a host's WinRM service. Its zero Port, Timeout
// and TLS are useful: 5985 over plain HTTP, 60 seconds per request.
type Config struct {
	Host string
	// Port defaults to 5986 with TLS and 5985 without.
	Port int
	// TLS, when set, makes the connection HTTPS, verified as it says (as
	// ad.Config.TLSConfig does: RootCAs for a private CA, ServerName when
	// Host is an address); MinVersion below TLS 1.2 is raised to it. Nil
	// means plain HTTP, where NTLM and Kerberos seal every message and
	// Basic is refused unless AllowUnencrypted is set.
	TLS *tls.Config
	// Auth logs on: Basic, NTLM, Certificate or Kerberos. Nil is an error.
	Auth Auth
	// AllowUnencrypted lets Basic run over plain HTTP, in clear (test hosts
	// only); NTLM and Kerberos seal there anyway.
	AllowUnencrypted bool
	// Timeout bounds each HTTP request (default 60s). A context bounds a
	// whole run.
	Timeout time.Duration
}

// Client runs PowerShell on one host. It is safe for concurrent use.
//
// masterzen/winrm builds the WS-Management messages and this package's
// transports carry them, but the command loop (Execute, Send, Receive,
// Signal, Delete) is ours: masterzen's stops on cancel without closing its
// output pipes, so a cancelled run waited forever and left its shell open
// on the host, and it has no way to give a command its input.
type Client struct {
	host   string
	wc     *winrm.Client
	tr     winrm.Transporter
	url    string
	params *winrm.Parameters
}

// cleanupTimeout bounds the Signal and shell deletion after a cancelled
// or failed run: they go out even though the caller's context is done.
const cleanupTimeout = 10 * time.Second

// New checks the configuration and builds a client; nothing is sent yet.
func New(cfg Config) (*Client, error) {
	if cfg.Host == "" {
		return nil, &Error{Op: "configure", Err: errors.New("no host")}
	}
	if cfg.Auth == nil {
		return nil, &Error{Host: cfg.Host, Op: "configure", Err: errors.New("no Auth: set Basic, NTLM, Certificate or Kerberos")}
	}
	https := cfg.TLS != nil
	if _, basic := cfg.Auth.(Basic); basic && !https && !cfg.AllowUnencrypted {
		return nil, &Error{Host: cfg.Host, Op: "configure", Err: errors.New("WinRM over HTTP with Basic auth would send the password and scripts in clear; use TLS, NTLM or Kerberos (which seal every message), or AllowUnencrypted for a test host")}
	}
	port := cfg.Port
	if port == 0 {
		port = 5985
		if https {
			port = 5986
		}
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	var tc *tls.Config
	if https {
		tc = cfg.TLS.Clone()
		if tc.MinVersion < tls.VersionTLS12 {
			tc.MinVersion = tls.VersionTLS12
		}
	}
	ep := winrm.NewEndpoint(cfg.Host, port, https, false, nil, nil, nil, timeout)
	// The host answers a Receive with a TimedOut fault when a command has
	// written nothing for OperationTimeout, and masterzen asks again. That
	// must happen before the HTTP request itself times out.
	op := timeout - 10*time.Second
	if op < timeout/2 {
		op = timeout / 2
	}
	params := winrm.NewParameters(fmt.Sprintf("PT%dS", max(1, int(op/time.Second))), "en-US", 153600)
	tr, err := cfg.Auth.transport(cfg.Host, tc)
	if err != nil {
		return nil, &Error{Host: cfg.Host, Op: "configure", Err: err}
	}
	params.TransportDecorator = func() winrm.Transporter { return tr }
	wc, err := winrm.NewClientWithParameters(ep, "", "", params)
	if err != nil {
		return nil, &Error{Host: cfg.Host, Op: "configure", Err: err}
	}
	scheme := "http"
	if https {
		scheme = "https"
	}
	url := scheme + "://" + net.JoinHostPort(cfg.Host, strconv.Itoa(port)) + "/wsman"
	return &Client{host: cfg.Host, wc: wc, tr: tr, url: url, params: params}, nil
}

// Host names the host in errors.
func (c *Client) Host() string { return c.host }

// RunPowerShell runs a script and returns its stdout. A non-zero exit is
// a *ScriptError with the CLIXML stderr made readable. Cancelling ctx
// stops the remote command (Signal terminate) and deletes the shell, then
// returns ctx's error.
//
// Secrets (a password) are passed apart from the script. They
// travel on the command's standard input (WinRS Send), one line each,
// never in the script or on the command line, which process-creation
// auditing records (event 4688, Sysmon 1): the script reads them as
// $secret0, $secret1, ..., set by lines this function puts before it
// ("$secret0 = [Console]::In.ReadLine()"). A secret holding a line break
// or NUL is refused. Errors carry no secret: every secret, raw or quoted,
// is replaced by [REDACTED] in the script's error text.
func (c *Client) RunPowerShell(ctx context.Context, script string, secrets ...string) (string, error) {
	var stdin strings.Builder
	var pre strings.Builder
	for i, sec := range secrets {
		if strings.ContainsAny(sec, "\r\n\x00") || !utf8.ValidString(sec) {
			return "", &Error{Host: c.host, Op: "run", Err: fmt.Errorf("secret %d holds a line break, a NUL or invalid UTF-8: it cannot go as a line of standard input", i)}
		}
		fmt.Fprintf(&pre, "$secret%d = [Console]::In.ReadLine()\n", i)
		stdin.WriteString(sec + "\r\n")
	}
	out, err := c.runScript(ctx, pre.String()+script, stdin.String())
	var se *ScriptError
	if errors.As(err, &se) {
		se.Message = wsman.Redact(se.Message, secrets...)
	}
	return out, err
}

func (c *Client) runScript(ctx context.Context, script, stdin string) (string, error) {
	cmds, err := wsman.Stage(script)
	if err != nil {
		return "", &Error{Host: c.host, Op: "run", Err: err}
	}
	if err := ctx.Err(); err != nil {
		return "", c.transportErr(ctx, "open shell", err)
	}
	resp, err := c.post(ctx, winrm.NewOpenShellRequest(c.url, c.params))
	if err != nil {
		return "", c.transportErr(ctx, "open shell", err)
	}
	shell, err := winrm.ParseOpenShellResponse(resp)
	if err != nil {
		return "", c.transportErr(ctx, "open shell", err)
	}
	defer c.cleanup(ctx, shell, "")
	if len(cmds) == 1 {
		return c.run(ctx, shell, cmds[0], stdin)
	}
	// Staged: append the pieces, run the file, and remove it whatever happened.
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		c.run(cctx, shell, cmds[len(cmds)-1], "")
	}()
	for _, line := range cmds[:len(cmds)-2] {
		if _, err := c.run(ctx, shell, line, ""); err != nil {
			return "", err
		}
	}
	return c.run(ctx, shell, cmds[len(cmds)-2], stdin)
}

// cleanup stops a command (when id is set) or deletes a shell, even when
// ctx is done, within cleanupTimeout.
func (c *Client) cleanup(ctx context.Context, shell, id string) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if id != "" {
		c.post(cctx, winrm.NewSignalRequest(c.url, shell, id, c.params))
		return
	}
	c.post(cctx, winrm.NewDeleteShellRequest(c.url, shell, c.params))
}

// run executes one command line and turns a failure into an error.
func (c *Client) run(ctx context.Context, shell, line, stdin string) (string, error) {
	stdout, stderr, code, err := c.exec(ctx, shell, line, stdin)
	if err != nil {
		return "", c.transportErr(ctx, "run", err)
	}
	if code != 0 {
		return "", &ScriptError{Host: c.host, ExitCode: code, Message: wsman.ParseCLIXML(stderr)}
	}
	return stdout, nil
}

func (c *Client) transportErr(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	return &Error{Host: c.host, Op: op, Err: err}
}

// exec runs one command line in the shell: Execute, its input (Send, with
// end of stream), then Receive until the command is done. When ctx ends
// first, the command is stopped (Signal terminate) and ctx's error returned
// at once; a Receive still in flight finishes on its own.
func (c *Client) exec(ctx context.Context, shell, line, stdin string) (string, string, int, error) {
	resp, err := c.post(ctx, winrm.NewExecuteCommandRequest(c.url, shell, line, nil, c.params))
	if err != nil {
		return "", "", 0, err
	}
	id, err := winrm.ParseExecuteCommandResponse(resp)
	if err != nil {
		return "", "", 0, err
	}
	done := false
	defer func() {
		if !done {
			c.cleanup(ctx, shell, id)
		}
	}()
	if stdin != "" {
		if _, err := c.post(ctx, winrm.NewSendInputRequest(c.url, shell, id, []byte(stdin), true, c.params)); err != nil {
			return "", "", 0, err
		}
	}
	var stdout, stderr bytes.Buffer
	for {
		resp, err := c.post(ctx, winrm.NewGetOutputRequest(c.url, shell, id, "stdout stderr", c.params))
		if err != nil {
			if ctx.Err() == nil && strings.Contains(err.Error(), "OperationTimeout") {
				continue // the command wrote nothing for OperationTimeout: ask again
			}
			return "", "", 0, err
		}
		finished, code, err := winrm.ParseSlurpOutputErrResponse(resp, &stdout, &stderr)
		if err != nil {
			return "", "", 0, err
		}
		if finished {
			done = true
			return stdout.String(), stderr.String(), code, nil
		}
	}
}

// post sends one message, returning early when ctx is done (the request
// itself then ends by the endpoint's timeout, on its own goroutine).
func (c *Client) post(ctx context.Context, msg *soapMessage) (string, error) {
	if err := ctx.Err(); err != nil {
		msg.Free()
		return "", err
	}
	type result struct {
		resp string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		defer msg.Free()
		resp, err := c.tr.Post(c.wc, msg)
		ch <- result{resp, err}
	}()
	select {
	case r := <-ch:
		return r.resp, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}
