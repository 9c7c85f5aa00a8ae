package psremote

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

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/masterzen/winrm"

	"github.com/segkcd/segkcd/internal/redact"
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

// Format prints the configuration without its password and private key,
// for every verb.
func (c Config) Format(f fmt.State, verb rune) {
	type plain Config
	m := plain(c)
	m.Password = redact.String(m.Password)
	m.KeyPEM = redact.Bytes(m.KeyPEM)
	redact.Format(f, verb, "psremote.Config", m)
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
	var tr winrm.Transporter
	switch cfg.Auth {
	case AuthBasic, "":
		tr = &basicTransport{user: cfg.User, password: cfg.Password}
	case AuthNTLM:
		if cfg.User == "" {
			return nil, errors.New("psremote: AuthNTLM needs Config.User")
		}
		tr = newNTLMTransport(cfg.User, cfg.Password, spn)
	case AuthCert:
		if !cfg.HTTPS {
			return nil, errors.New("psremote: certificate authentication needs HTTPS")
		}
		cert, err := tls.X509KeyPair(cfg.CertPEM, cfg.KeyPEM)
		if err != nil {
			return nil, fmt.Errorf("psremote: client certificate: %w", err)
		}
		tr = &certTransport{cert: cert}
	case AuthKerberos:
		if cfg.Kerberos == nil {
			return nil, errors.New("psremote: AuthKerberos needs Config.Kerberos")
		}
		tr = newKrbTransport(cfg.Kerberos, spn)
		if !cfg.HTTPS {
			tr = newKrbSessionTransport(cfg.Kerberos, spn)
		}
	default:
		return nil, fmt.Errorf("psremote: unknown auth %q", cfg.Auth)
	}
	params.TransportDecorator = func() winrm.Transporter { return tr }
	wc, err := winrm.NewClientWithParameters(ep, cfg.User, cfg.Password, params)
	if err != nil {
		return nil, fmt.Errorf("psremote: %s: %w", cfg.Host, err)
	}
	scheme := "http"
	if cfg.HTTPS {
		scheme = "https"
	}
	url := scheme + "://" + net.JoinHostPort(cfg.Host, strconv.Itoa(port)) + "/wsman"
	return &Client{host: cfg.Host, wc: wc, tr: tr, url: url, params: params}, nil
}

// Host names the host in errors.
func (c *Client) Host() string { return c.host }

// RunPowerShell runs a script and returns its stdout. A non-zero exit is a
// *ScriptError with the CLIXML stderr made readable. Cancelling ctx stops
// the remote command (Signal terminate) and deletes the shell, then
// returns ctx's error.
func (c *Client) RunPowerShell(ctx context.Context, script string) (string, error) {
	return c.RunPowerShellSecret(ctx, script)
}

// RunPowerShellSecret runs a script that needs secrets (a password). They
// travel on the command's standard input (WinRS Send), one line each,
// never in the script or on the command line, which process-creation
// auditing records (event 4688, Sysmon 1): the script reads them as
// $secret0, $secret1, ..., set by lines this function puts before it
// ("$secret0 = [Console]::In.ReadLine()"). A secret holding a line break
// or NUL is refused. Errors carry no secret: every secret, raw or quoted,
// is replaced by [REDACTED] in the script's error text.
func (c *Client) RunPowerShellSecret(ctx context.Context, script string, secrets ...string) (string, error) {
	var stdin strings.Builder
	var pre strings.Builder
	for i, sec := range secrets {
		if strings.ContainsAny(sec, "\r\n\x00") || !utf8.ValidString(sec) {
			return "", fmt.Errorf("psremote: secret %d holds a line break, a NUL or invalid UTF-8: it cannot go as a line of standard input", i)
		}
		fmt.Fprintf(&pre, "$secret%d = [Console]::In.ReadLine()\n", i)
		stdin.WriteString(sec + "\r\n")
	}
	out, err := c.runScript(ctx, pre.String()+script, stdin.String())
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

func (c *Client) runScript(ctx context.Context, script, stdin string) (string, error) {
	cmds, err := Stage(script)
	if err != nil {
		return "", err
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
