// Package lab provisions and runs a throwaway Samba Active Directory domain
// controller on a loopback address, for tests and for the demo.
//
// The lab is real: Samba's LDAP server, its Heimdal KDC and its sam.ldb. It
// lives in a directory of its own (a temporary one unless told otherwise),
// binds only to one 127.x.y.z address so several labs can run side by side,
// and its samba process dies with the process that started it, even when that
// process panics (PR_SET_PDEATHSIG), so no test run leaves a DC behind.
//
// Users must not import this package: it is test and demo plumbing.
package lab

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jcmturner/gokrb5/v8/keytab"
)

// tools are the commands whose absence means the packages must be installed.
var tools = []string{"samba", "samba-tool", "samba_spnupdate", "ldbsearch", "kinit", "kvno", "klist"}

// Options configure Start. The zero value gives a fresh domain
// CORP.EXAMPLE.TEST in a temporary directory that Close removes.
type Options struct {
	// Dir keeps the lab in this directory. If it already holds a lab, that lab
	// is started again with its data (the demo does this so that a second run
	// finds everything it made the first time). Close leaves Dir in place.
	Dir string
	// Realm is the Kerberos realm; the DNS domain is its lower case.
	Realm string
	// Domain is the NetBIOS domain name.
	Domain string
	// IP is the loopback address to bind; empty picks a free 127.x.y.z.
	IP string
	// Log, when set, receives progress lines.
	Log io.Writer
	// InstallPackages lets Start run apt-get when Samba is missing (root only).
	InstallPackages bool
	// Host is the DC's host name (NetBIOS name and first DNS label);
	// empty means dc1. Two DCs that trust each other need two names.
	Host string
	// Trust makes a DC that can take part in a trust (TrustWith): the
	// services a trust needs (SMB, RPC, NetBIOS, CLDAP, winbindd) besides
	// LDAP and the KDC, run in a mount namespace of its own, because each
	// DC's winbindd puts its sockets in /run/samba and two would collide.
	Trust bool
	// MultiDC makes a DC that others can join (AddDC): Trust's services
	// and mount namespace, plus Samba's internal DNS server (the domain is
	// provisioned with SAMBA_INTERNAL), which serves the domain's SRV
	// records on port 53 of the DC's address, and DRS replication.
	MultiDC bool
}

// Lab is a running domain controller.
type Lab struct {
	trust         bool   // started with Options.Trust or MultiDC
	multiDC       bool   // started with Options.MultiDC, or joined by AddDC
	first         *Lab   // a DC AddDC joined: the domain's first DC
	host          string // Options.Host
	Dir           string // where everything lives; an attached lab's files of this process only (Attach)
	IP            string // the loopback address it binds
	Realm         string // CORP.EXAMPLE.TEST
	Domain        string // CORP (NetBIOS)
	DNSDomain     string // corp.example.test
	BaseDN        string // DC=corp,DC=example,DC=test
	HostName      string // dc1.corp.example.test: the name in its TLS certificate
	AdminUser     string // Administrator
	AdminPassword string
	Krb5Conf      string // path of a krb5.conf that points at this KDC only
	SmbConf       string // path of the DC's smb.conf (samba-tool --configfile)
	CAFile        string // PEM of the CA that signed the DC's LDAPS certificate

	dcDir    string // the DC's own directory (sam.ldb, smb.conf); Dir unless attached
	attached bool   // made by Attach: another process runs the DC
	keep     bool
	cmd      *exec.Cmd
	done     chan struct{}
	waitErr  error
	logf     func(string, ...any)
	once     sync.Once
}

// state is what a kept lab remembers between runs.
type state struct {
	Realm         string `json:"realm"`
	Domain        string `json:"domain"`
	AdminPassword string `json:"admin_password"`
}

const stateFile = "lab.json"

// LDAPSURL is the LDAPS URL of the DC.
func (l *Lab) LDAPSURL() string { return "ldaps://" + net.JoinHostPort(l.IP, "636") }

// LDAPURL is the plain LDAP URL of the DC (StartTLS upgrades it).
func (l *Lab) LDAPURL() string { return "ldap://" + net.JoinHostPort(l.IP, "389") }

// GCURL is the LDAPS URL of the DC's global catalog.
func (l *Lab) GCURL() string { return "ldaps://" + net.JoinHostPort(l.IP, "3269") }

// KDCAddr is host:port of the KDC.
func (l *Lab) KDCAddr() string { return net.JoinHostPort(l.IP, "88") }

// AdminBindName is the administrator in DOMAIN\user form.
func (l *Lab) AdminBindName() string { return l.Domain + `\` + l.AdminUser }

// TLSConfig trusts the DC's own CA and expects its host name.
func (l *Lab) TLSConfig() (*tls.Config, error) {
	pem, err := os.ReadFile(l.CAFile)
	if err != nil {
		return nil, fmt.Errorf("lab: read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("lab: no certificate in " + l.CAFile)
	}
	return &tls.Config{RootCAs: pool, ServerName: l.HostName, MinVersion: tls.VersionTLS12}, nil
}

// Env returns environment variables that point MIT Kerberos tools at this lab.
func (l *Lab) Env() []string {
	return []string{"KRB5_CONFIG=" + l.Krb5Conf}
}

// schemaDir holds the AD schema files from samba-ad-provision.
const schemaDir = "/usr/share/samba/setup/ad-schema"

// Missing reports which of the lab's tools (and schema files) are not
// installed, and a Samba older than 4.22.
func Missing() []string {
	var m []string
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			m = append(m, t)
		}
	}
	if _, err := os.Stat(schemaDir); err != nil {
		m = append(m, schemaDir)
	}
	if v, ok := SambaVersion(); !ok || v[0] < 4 || (v[0] == 4 && v[1] < 22) {
		m = append(m, "samba>=4.22")
	}
	return m
}

// SambaVersion is the installed Samba's major and minor version.
func SambaVersion() ([2]int, bool) {
	out, err := exec.Command("samba", "--version").Output()
	if err != nil {
		return [2]int{}, false
	}
	var v [2]int
	if _, err := fmt.Sscanf(strings.TrimPrefix(strings.TrimSpace(string(out)), "Version "), "%d.%d", &v[0], &v[1]); err != nil {
		return [2]int{}, false
	}
	return v, true
}

// EnsurePackages installs what the lab needs when something is missing,
// by running the repository's scripts/lab deps: one install procedure
// (Samba 4.22 from bookworm-backports on Debian 12) for make, tests and
// CI. It needs root; without it the error says what to run.
func EnsurePackages(ctx context.Context, log io.Writer) error {
	missing := Missing()
	if len(missing) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("lab: %s not installed; run scripts/lab deps as root", strings.Join(missing, ", "))
	}
	script, err := findScript()
	if err != nil {
		return fmt.Errorf("lab: %s not installed, and %w", strings.Join(missing, ", "), err)
	}
	if log == nil {
		log = io.Discard
	}
	fmt.Fprintf(log, "lab: %s missing; running %s deps\n", strings.Join(missing, ", "), script)
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, script, "deps")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("lab: %s deps: %w\n%s", script, err, tail(out.String(), 2000))
	}
	if m := Missing(); len(m) > 0 {
		return fmt.Errorf("lab: still missing after install: %s", strings.Join(m, ", "))
	}
	return nil
}

// findScript finds scripts/lab in the working directory or a parent (go
// test runs in the package's directory).
func findScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "scripts", "lab")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no scripts/lab in the working directory or above it")
		}
		dir = parent
	}
}

// Start provisions (or reuses) a domain and starts its DC. It returns once the
// KDC and LDAPS answer. The caller must Close the lab.
func Start(ctx context.Context, opt Options) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("lab: the Samba AD DC must run as root (it binds ports 88, 389 and 636)")
	}
	if opt.InstallPackages {
		if err := EnsurePackages(ctx, opt.Log); err != nil {
			return nil, err
		}
	} else if m := Missing(); len(m) > 0 {
		return nil, fmt.Errorf("lab: %s not installed; run scripts/lab deps as root", strings.Join(m, ", "))
	}
	l := &Lab{Realm: opt.Realm, Domain: opt.Domain, AdminUser: "Administrator", logf: func(string, ...any) {},
		trust: opt.Trust || opt.MultiDC, multiDC: opt.MultiDC}
	if opt.Log != nil {
		l.logf = func(f string, a ...any) { fmt.Fprintf(opt.Log, "lab: "+f+"\n", a...) }
	}
	if l.Realm == "" {
		l.Realm = "CORP.EXAMPLE.TEST"
	}
	if l.Domain == "" {
		l.Domain = "CORP"
	}
	l.host = strings.ToLower(opt.Host)
	if l.host == "" {
		l.host = "dc1"
	}
	if opt.Dir != "" {
		l.keep = true
		abs, err := filepath.Abs(opt.Dir)
		if err != nil {
			return nil, err
		}
		l.Dir = abs
	} else {
		removeStale()
		dir, err := os.MkdirTemp("", "segkcd-lab-")
		if err != nil {
			return nil, err
		}
		l.Dir = dir
		// Whoever finds this directory with its owner gone may delete it.
		_ = os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o600)
	}
	ok := false
	defer func() {
		if !ok {
			l.Close()
		}
	}()

	ip := opt.IP
	if ip == "" {
		var err error
		if ip, err = freeLoopback(); err != nil {
			return nil, err
		}
	}
	l.IP = ip

	if st, err := readState(l.Dir); err == nil {
		l.Realm, l.Domain, l.AdminPassword = st.Realm, st.Domain, st.AdminPassword
		l.logf("reusing the domain in %s", l.Dir)
	} else if errors.Is(err, os.ErrNotExist) {
		if err := l.provision(ctx); err != nil {
			return nil, err
		}
	} else {
		return nil, err
	}
	l.dcDir = l.Dir
	l.derive()
	if err := l.configure(); err != nil {
		return nil, err
	}
	if err := l.start(ctx); err != nil {
		return nil, err
	}
	if err := l.writeServing(); err != nil {
		return nil, err
	}
	// The DC's own SPNs (ldap/dc1..., GC/...) come from samba_spnupdate, which
	// the trimmed-away dnsupdate service would run: run it here, once.
	if out, err := run(ctx, nil, "samba_spnupdate", "-s", l.SmbConf); err != nil {
		return nil, fmt.Errorf("lab: %w\n%s", err, tail(out, 2000))
	}
	ok = true
	return l, nil
}

// derive sets the names and paths that follow from the realm, the host
// name and the DC's directory.
func (l *Lab) derive() {
	l.DNSDomain = strings.ToLower(l.Realm)
	l.HostName = l.host + "." + l.DNSDomain
	l.BaseDN = "DC=" + strings.Join(strings.Split(l.DNSDomain, "."), ",DC=")
	l.SmbConf = filepath.Join(l.dcDir, "etc", "smb.conf")
	l.CAFile = filepath.Join(l.dcDir, "tls", "ca.pem")
	l.Krb5Conf = filepath.Join(l.dcDir, "krb5.conf")
}

func readState(dir string) (state, error) {
	var st state
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("lab: %s: %w", stateFile, err)
	}
	return st, nil
}

// provision runs samba-tool domain provision into l.Dir.
func (l *Lab) provision(ctx context.Context) error {
	if ents, _ := os.ReadDir(l.Dir); len(ents) > 0 && !(len(ents) == 1 && ents[0].Name() == "owner.pid") {
		return fmt.Errorf("lab: %s is not empty and holds no lab (%s missing)", l.Dir, stateFile)
	}
	pw, err := adminPassword()
	if err != nil {
		return err
	}
	l.AdminPassword = pw
	t0 := time.Now()
	dns := "NONE"
	if l.multiDC {
		dns = "SAMBA_INTERNAL"
	}
	cmd := exec.CommandContext(ctx, "samba-tool", "domain", "provision",
		"--targetdir="+l.Dir, "--realm="+l.Realm, "--domain="+l.Domain,
		"--server-role=dc", "--dns-backend="+dns, "--adminpass="+pw,
		"--host-name="+l.host, "--host-ip="+l.IP,
		"--option=interfaces="+l.IP+"/8", "--option=bind interfaces only=yes")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		// The output never holds the admin password: samba-tool does not echo it.
		return fmt.Errorf("lab: provision: %w\n%s", err, tail(out.String(), 3000))
	}
	l.logf("provisioned %s in %s (%.1fs)", l.Realm, l.Dir, time.Since(t0).Seconds())
	b, _ := json.Marshal(state{Realm: l.Realm, Domain: l.Domain, AdminPassword: pw})
	return os.WriteFile(filepath.Join(l.Dir, stateFile), b, 0o600)
}

// configure rewrites smb.conf for this run and writes krb5.conf.
func (l *Lab) configure() error {
	b, err := os.ReadFile(l.SmbConf)
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	set := map[string]string{
		"interfaces": l.IP + "/8",
		// Only what the SDK talks to: fewer services start faster and bind fewer ports.
		"server services": "ldap, kdc",
		// Without its own pid directory a second DC on the machine refuses to start.
		"pid directory":             filepath.Join(l.Dir, "run"),
		"log file":                  filepath.Join(l.Dir, "log.samba"),
		"ncalrpc dir":               filepath.Join(l.Dir, "ncalrpc"),
		"winbindd socket directory": filepath.Join(l.Dir, "winbindd"),
		"tls enabled":               "yes",
		// Windows DCs accept a GSSAPI bind without SASL signing inside TLS;
		// Samba's default ("yes") refuses it. Behave like Windows.
		"ldap server require strong auth": "allow_sasl_over_tls",
		"tls keyfile":                     filepath.Join(l.Dir, "tls", "key.pem"),
		"tls certfile":                    filepath.Join(l.Dir, "tls", "cert.pem"),
		"tls cafile":                      filepath.Join(l.Dir, "tls", "ca.pem"),
	}
	if l.trust {
		if err := l.writeHosts(); err != nil {
			return err
		}
		// smbd authenticates through winbindd and samba's RPC, which it
		// finds at their default places (a moved winbindd socket fails
		// every SMB logon with NT_STATUS_INTERNAL_ERROR); the DC's own
		// mount namespace keeps /run/samba apart instead.
		set["server services"] = "s3fs, rpc, nbt, ldap, cldap, kdc, drepl, winbindd"
		delete(set, "ncalrpc dir")
		delete(set, "winbindd socket directory")
	}
	if l.multiDC {
		if err := l.writeMultiDC(); err != nil {
			return err
		}
		set["server services"] += ", dns"
		// One worker per service (memory), replication partners told of a
		// change within a second (tests wait for replication).
		set["prefork children"] = "1"
		set["dreplsrv:notify_interval"] = "1"
	}
	if err := l.writeTLS(); err != nil {
		return fmt.Errorf("lab: TLS: %w", err)
	}
	conf := setGlobals(string(b), set)
	for _, d := range []string{"run", "ncalrpc", "winbindd"} {
		if err := os.MkdirAll(filepath.Join(l.Dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(l.SmbConf, []byte(conf), 0o644); err != nil {
		return err
	}
	krb5 := fmt.Sprintf(`[libdefaults]
	default_realm = %[1]s
	dns_lookup_kdc = false
	dns_lookup_realm = false
	rdns = false
	forwardable = true

[realms]
	%[1]s = {
		kdc = %[2]s
		admin_server = %[2]s
	}

[domain_realm]
	.%[3]s = %[1]s
	%[3]s = %[1]s
`, l.Realm, l.IP, strings.ToLower(l.Realm))
	return os.WriteFile(l.Krb5Conf, []byte(krb5), 0o644)
}

// setGlobals sets keys in the [global] section of an smb.conf text,
// replacing lines that set them already.
func setGlobals(conf string, set map[string]string) string {
	var out []string
	inGlobal := false
	for _, line := range strings.Split(conf, "\n") {
		trim := strings.TrimSpace(line)
		if strings.HasPrefix(trim, "[") {
			if inGlobal {
				out = appendGlobals(out, set)
			}
			inGlobal = strings.EqualFold(trim, "[global]")
		}
		if inGlobal {
			if k, _, found := strings.Cut(trim, "="); found {
				if _, ours := set[strings.ToLower(strings.TrimSpace(k))]; ours {
					continue
				}
			}
		}
		out = append(out, line)
	}
	if inGlobal {
		out = appendGlobals(out, set)
	}
	return strings.Join(out, "\n")
}

func appendGlobals(out []string, set map[string]string) []string {
	// Insert before the trailing blank lines of the section.
	i := len(out)
	for i > 0 && strings.TrimSpace(out[i-1]) == "" {
		i--
	}
	var add []string
	for _, k := range sortedKeys(set) {
		add = append(add, "\t"+k+" = "+set[k])
	}
	rest := append([]string{}, out[i:]...)
	return append(append(out[:i], add...), rest...)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// start runs samba in the foreground as our child and waits until it serves.
func (l *Lab) start(ctx context.Context) error {
	logPath := filepath.Join(l.Dir, "samba.out")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	l.done = make(chan struct{})
	started := make(chan error, 1)
	t0 := time.Now()
	go func() {
		// PR_SET_PDEATHSIG fires when the thread that forked the child exits,
		// so that thread stays locked and alive for as long as samba runs.
		runtime.LockOSThread()
		defer logf.Close()
		cmd := exec.Command("samba", "-s", l.SmbConf, "-i", "-M", "single", "--debug-stdout")
		if l.trust {
			// A mount namespace of its own, /run/samba bound to the lab's.
			// Its /etc/hosts is the lab's hosts file, which TrustWith
			// extends with the other DC's name.
			cmd = l.namespaced(context.Background(), true, "samba", "-s", l.SmbConf, "-i", "--debug-stdout")
		}
		if l.multiDC {
			// Its resolver is its own DNS server (a DC finds its partners
			// there), and its Kerberos logons go to its own KDC.
			cmd.Env = append(os.Environ(), "KRB5_CONFIG="+l.Krb5Conf)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			started <- err
			close(l.done)
			return
		}
		l.cmd = cmd
		started <- nil
		l.waitErr = cmd.Wait()
		close(l.done)
		// Not unlocking on purpose: the thread ends with this goroutine.
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("lab: start samba: %w", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if l.ready() {
			l.logf("DC up on %s (%.1fs)", l.IP, time.Since(t0).Seconds())
			return nil
		}
		select {
		case <-l.done:
			out, _ := os.ReadFile(logPath)
			return fmt.Errorf("lab: samba exited (%v) before serving:\n%s", l.waitErr, tail(string(out), 3000))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logPath)
			return fmt.Errorf("lab: samba did not serve KDC and LDAPS within 60s:\n%s", tail(string(out), 3000))
		}
	}
}

// ready reports whether the KDC accepts TCP and LDAPS completes a handshake
// with the DC's certificate (samba writes it on first start).
func (l *Lab) ready() bool {
	c, err := net.DialTimeout("tcp", l.KDCAddr(), 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	cfg, err := l.TLSConfig()
	if err != nil {
		return false
	}
	d := &net.Dialer{Timeout: 500 * time.Millisecond}
	tc, err := tls.DialWithDialer(d, "tcp", net.JoinHostPort(l.IP, "636"), cfg)
	if err != nil {
		return false
	}
	tc.Close()
	return true
}

// Close stops samba (SIGTERM, then SIGKILL to its process group) and removes a
// temporary lab's directory; an attached lab's Close removes only this
// process's Dir. It is safe to call more than once.
func (l *Lab) Close() error {
	l.once.Do(func() {
		if l.cmd != nil && l.cmd.Process != nil {
			_ = os.Remove(filepath.Join(l.dcDir, servingFile))
			l.stop()
		}
		if !l.keep && l.Dir != "" {
			_ = os.RemoveAll(l.Dir)
		}
	})
	return nil
}

// Restart stops samba (SIGTERM to its process group, SIGKILL after 5 s)
// and starts it again on the same address and database, as a DC reboots;
// it returns once the KDC and LDAPS serve again.
func (l *Lab) Restart(ctx context.Context) error {
	if l.attached {
		return errAttached
	}
	if l.cmd == nil || l.cmd.Process == nil {
		return errors.New("lab: samba is not running")
	}
	l.stop()
	return l.start(ctx)
}

// stop ends samba's process group: SIGTERM, SIGKILL after 5 s, and
// SIGKILL to any straggler.
func (l *Lab) stop() {
	pgid := l.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-l.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-l.done
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// Pause stops every samba process of the lab (SIGSTOP): the KDC and LDAP
// hang, as a DC does that is overloaded or cut off. The kernel still
// completes TCP handshakes to a stopped process, so clients see timeouts,
// not refusals. Resume lets it go on.
func (l *Lab) Pause() error { return l.signal(syscall.SIGSTOP) }

// Resume continues a paused lab (SIGCONT).
func (l *Lab) Resume() error { return l.signal(syscall.SIGCONT) }

func (l *Lab) signal(sig syscall.Signal) error {
	if l.attached {
		return errAttached
	}
	if l.cmd == nil || l.cmd.Process == nil {
		return errors.New("lab: samba is not running")
	}
	return syscall.Kill(-l.cmd.Process.Pid, sig)
}

// ExportKeytab exports the current keys of principal (e.g. "EXCHASA$")
// with samba-tool, as an Exchange server holds them after an ASA roll.
func (l *Lab) ExportKeytab(ctx context.Context, principal string) (*keytab.Keytab, error) {
	dir, err := os.MkdirTemp(l.Dir, "keytab-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "exported.keytab")
	if out, err := l.SambaTool(ctx, "domain", "exportkeytab", path, "--principal="+principal); err != nil {
		return nil, fmt.Errorf("lab: exportkeytab %s: %v: %s", principal, err, out)
	}
	return keytab.Load(path)
}

// SambaTool runs samba-tool against this DC's database and returns its output.
func (l *Lab) SambaTool(ctx context.Context, args ...string) (string, error) {
	args = append(args, "--configfile="+l.SmbConf)
	return run(ctx, nil, "samba-tool", args...)
}

// Ldbsearch reads the DC's sam.ldb directly, bypassing LDAP altogether.
func (l *Lab) Ldbsearch(ctx context.Context, base, filter string, attrs ...string) (string, error) {
	args := []string{"-H", filepath.Join(l.dcDir, "private", "sam.ldb"), "-b", base, filter}
	args = append(args, attrs...)
	return run(ctx, nil, "ldbsearch", args...)
}

// Ldbmodify applies an LDIF change to the DC's database directly, as the
// system (as samba-tool does on a DC): for attributes Samba lets no LDAP
// client write.
func (l *Lab) Ldbmodify(ctx context.Context, ldif string) (string, error) {
	f, err := os.CreateTemp(l.Dir, "change-*.ldif")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(ldif); err != nil {
		f.Close()
		return "", err
	}
	f.Close()
	return run(ctx, nil, "ldbmodify", "-H", filepath.Join(l.dcDir, "private", "sam.ldb"), f.Name())
}

// Command builds a command with this lab's Kerberos configuration and a
// credential cache of its own in the lab directory.
func (l *Lab) Command(ctx context.Context, ccache string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "KRB5_CONFIG="+l.Krb5Conf, "KRB5CCNAME=FILE:"+filepath.Join(l.Dir, ccache))
	return cmd
}

func run(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = env
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, args[0], err, tail(out.String(), 1500))
	}
	return out.String(), nil
}

// freeLoopback picks a random 127.x.y.z on which none of the DC's ports is taken.
func freeLoopback() (string, error) {
	for i := 0; i < 50; i++ {
		n, err := rand.Int(rand.Reader, big.NewInt(250*250*250))
		if err != nil {
			return "", err
		}
		v := n.Int64()
		ip := fmt.Sprintf("127.%d.%d.%d", 1+v/62500, v/250%250, 2+v%250)
		if portsFree(ip) {
			return ip, nil
		}
	}
	return "", errors.New("lab: no free loopback address found")
}

func portsFree(ip string) bool {
	for _, p := range []string{"88", "389", "636", "3268", "3269", "464"} {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, p))
		if err != nil {
			return false
		}
		ln.Close()
	}
	return true
}

// removeStale deletes temporary labs whose owning process is gone.
func removeStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "segkcd-lab-*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "owner.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(d)
		}
	}
}

func adminPassword() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	// Upper, lower, digit and symbol: meets the default complexity policy.
	return "Lab-" + hex.EncodeToString(b) + "-x9!", nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return "…\n" + s
}

// ScanLines splits ldbsearch's LDIF output into lines, unfolding the
// lines LDIF folds at 78 characters.
func ScanLines(s string) []string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		// An LDIF line folded at 78 characters goes on after one space.
		if t := sc.Text(); strings.HasPrefix(t, " ") && len(lines) > 0 {
			lines[len(lines)-1] += t[1:]
		} else {
			lines = append(lines, t)
		}
	}
	return lines
}
