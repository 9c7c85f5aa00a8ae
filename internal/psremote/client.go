package psremote

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/masterzen/winrm"
)

// Auth methods for Config.Auth.
const (
	// AuthBasic sends the password with every request: HTTPS only, or
	// AllowUnencrypted for a test host.
	AuthBasic = "basic"
	// AuthNTLM is NTLMv2. On HTTP every message is sealed with the NTLM
	// session (MS-WSMV message encryption), so it needs no
	// AllowUnencrypted; on HTTPS the logon is bound to the server's
	// certificate (channel binding).
	AuthNTLM = "ntlm"
	// AuthCert logs on with a TLS client certificate that the host maps to
	// a local account (winrm/config/service/certmapping): HTTPS only. The
	// certificate needs Client Authentication in its extended key usage and
	// the account's UPN in its subject alternative name.
	AuthCert = "certificate"
)

// Config says how to reach a host's WinRM service.
type Config struct {
	Host  string
	Port  int  // default 5986 with HTTPS, 5985 without
	HTTPS bool // recommended; on HTTP, NTLM and Kerberos keep messages private by sealing them
	// CACert (PEM) verifies the host's certificate; Insecure skips that (labs only).
	CACert   []byte
	Insecure bool
	// Auth is AuthBasic (the default), AuthNTLM, AuthCert or AuthKerberos.
	// User ("DOMAIN\\user" or a UPN) and Password for Basic and NTLM;
	// CertPEM and KeyPEM for AuthCert.
	Auth             string
	User, Password   string
	CertPEM, KeyPEM  []byte
	AllowUnencrypted bool // lets Basic run over plain HTTP, in clear (test hosts only); NTLM and Kerberos seal there anyway
	// Kerberos is the client for AuthKerberos (e.g. gokrb5's client.NewWithPassword
	// or NewWithKeytab on the config kerberos.LoadConfig returns); SPN is the
	// host's service name, default HTTP/<Host>.
	Kerberos *client.Client
	SPN      string
	// Timeout bounds each HTTP request (default 60s). A context bounds a whole run.
	Timeout time.Duration
}

// Client runs PowerShell on one host. It is safe for concurrent use.
type Client struct {
	host string
	wc   *winrm.Client
}

// New checks the configuration and builds a client; nothing is sent yet.
func New(cfg Config) (*Client, error) {
	if cfg.Host == "" {
		return nil, errors.New("psremote: no host")
	}
	if !cfg.HTTPS && !cfg.AllowUnencrypted && (cfg.Auth == AuthBasic || cfg.Auth == "") {
		return nil, fmt.Errorf("psremote: %s: WinRM over HTTP with Basic auth would send the password and scripts in clear; use HTTPS, NTLM or Kerberos (which seal every message), or AllowUnencrypted for a test host", cfg.Host)
	}
	port := cfg.Port
	if port == 0 {
		port = 5985
		if cfg.HTTPS {
			port = 5986
		}
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	ep := winrm.NewEndpoint(cfg.Host, port, cfg.HTTPS, cfg.Insecure, cfg.CACert, nil, nil, timeout)
	// The host answers a Receive with a TimedOut fault when a command has
	// written nothing for OperationTimeout, and masterzen asks again. That
	// must happen before the HTTP request itself times out.
	op := timeout - 10*time.Second
	if op < timeout/2 {
		op = timeout / 2
	}
	params := winrm.NewParameters(fmt.Sprintf("PT%dS", max(1, int(op/time.Second))), "en-US", 153600)
	spn := cfg.SPN
	if spn == "" {
		spn = "HTTP/" + cfg.Host
	}
	switch cfg.Auth {
	case AuthBasic, "":
		t := &basicTransport{user: cfg.User, password: cfg.Password}
		params.TransportDecorator = func() winrm.Transporter { return t }
	case AuthNTLM:
		if cfg.User == "" {
			return nil, errors.New("psremote: AuthNTLM needs Config.User")
		}
		t := newNTLMTransport(cfg.User, cfg.Password, spn)
		params.TransportDecorator = func() winrm.Transporter { return t }
	case AuthCert:
		if !cfg.HTTPS {
			return nil, errors.New("psremote: certificate authentication needs HTTPS")
		}
		cert, err := tls.X509KeyPair(cfg.CertPEM, cfg.KeyPEM)
		if err != nil {
			return nil, fmt.Errorf("psremote: client certificate: %w", err)
		}
		t := &certTransport{cert: cert}
		params.TransportDecorator = func() winrm.Transporter { return t }
	case AuthKerberos:
		if cfg.Kerberos == nil {
			return nil, errors.New("psremote: AuthKerberos needs Config.Kerberos")
		}
		var t winrm.Transporter = newKrbTransport(cfg.Kerberos, spn)
		if !cfg.HTTPS {
			t = newKrbSessionTransport(cfg.Kerberos, spn)
		}
		params.TransportDecorator = func() winrm.Transporter { return t }
	default:
		return nil, fmt.Errorf("psremote: unknown auth %q", cfg.Auth)
	}
	wc, err := winrm.NewClientWithParameters(ep, cfg.User, cfg.Password, params)
	if err != nil {
		return nil, fmt.Errorf("psremote: %s: %w", cfg.Host, err)
	}
	return &Client{host: cfg.Host, wc: wc}, nil
}

// Host names the host in errors.
func (c *Client) Host() string { return c.host }

// RunPowerShell runs a script and returns its stdout. A non-zero exit is a
// *ScriptError with the CLIXML stderr made readable. Cancelling ctx stops
// the remote command (Signal terminate) and closes the shell.
func (c *Client) RunPowerShell(ctx context.Context, script string) (string, error) {
	return c.RunPowerShellSecret(ctx, script)
}

// RunPowerShellSecret runs a script that carries secrets (a password in a
// quoted literal). PowerShell error records quote the failing line, so
// every secret, raw or quoted, is replaced by [REDACTED] in the error. Such
// a script is never staged through a file on the host: it must fit in one
// command line.
func (c *Client) RunPowerShellSecret(ctx context.Context, script string, secrets ...string) (string, error) {
	out, err := c.runScript(ctx, script, len(secrets) > 0)
	var se *ScriptError
	if errors.As(err, &se) {
		se.Message = Redact(se.Message, secrets...)
	}
	return out, err
}

// Redact replaces each secret, and its PowerShell-quoted form, with [REDACTED].
func Redact(s string, secrets ...string) string {
	for _, sec := range secrets {
		if sec == "" {
			continue
		}
		if q, err := Quote(sec); err == nil {
			s = strings.ReplaceAll(s, q[1:len(q)-1], "[REDACTED]")
		}
		s = strings.ReplaceAll(s, sec, "[REDACTED]")
	}
	return s
}

func (c *Client) runScript(ctx context.Context, script string, secret bool) (string, error) {
	cmds, err := Stage(script)
	if err != nil {
		return "", err
	}
	if secret && len(cmds) > 1 {
		return "", fmt.Errorf("psremote: a script with secrets must fit one command line (%d characters); it is not written to a file on %s", MaxCommandLine, c.host)
	}
	shell, err := runCtx(ctx, func() (*winrm.Shell, error) { return c.wc.CreateShell() })
	if err != nil {
		return "", c.transportErr(ctx, "open shell", err)
	}
	defer shell.Close()
	if len(cmds) == 1 {
		return c.run(ctx, shell, cmds[0])
	}
	// Staged: append the pieces, run the file, and remove it whatever happened.
	cleanup := cmds[len(cmds)-1]
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		c.run(cctx, shell, cleanup)
	}()
	for _, line := range cmds[:len(cmds)-2] {
		if _, err := c.run(ctx, shell, line); err != nil {
			return "", err
		}
	}
	return c.run(ctx, shell, cmds[len(cmds)-2])
}

// run executes one command line and turns a failure into an error.
func (c *Client) run(ctx context.Context, shell *winrm.Shell, line string) (string, error) {
	stdout, stderr, code, err := c.exec(ctx, shell, line)
	if err != nil {
		return "", c.transportErr(ctx, "run", err)
	}
	if code != 0 {
		return "", &ScriptError{Host: c.host, ExitCode: code, Message: ParseCLIXML(stderr)}
	}
	return stdout, nil
}

func (c *Client) transportErr(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("psremote: %s on %s: %w", op, c.host, ctx.Err())
	}
	return fmt.Errorf("psremote: %s on %s: %w", op, c.host, err)
}

// exec runs one command line in the shell, stopping it when ctx is done.
func (c *Client) exec(ctx context.Context, shell *winrm.Shell, line string) (string, string, int, error) {
	cmd, err := runCtx(ctx, func() (*winrm.Command, error) { return shell.Execute(line) })
	if err != nil {
		return "", "", 0, err
	}
	var stdout, stderr bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); io.Copy(&stdout, cmd.Stdout) }()
	go func() { defer wg.Done(); io.Copy(&stderr, cmd.Stderr) }()
	done := make(chan struct{})
	go func() { cmd.Wait(); wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		cmd.Close() // Signal terminate
		<-done
		return "", "", 0, ctx.Err()
	}
	cmd.Close()
	return stdout.String(), stderr.String(), cmd.ExitCode(), nil
}

// runCtx runs a blocking call, returning early when ctx is done (the
// call's HTTP request ends by the endpoint timeout).
func runCtx[T any](ctx context.Context, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() { v, err := f(); ch <- result{v, err} }()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}
