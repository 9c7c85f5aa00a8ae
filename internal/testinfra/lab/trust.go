package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// WriteKrb5Conf writes a krb5.conf that knows every lab's realm and KDC,
// for clients (and samba-tool) that cross a trust between them; the first
// lab's realm is the default.
func WriteKrb5Conf(path string, labs ...*Lab) error {
	if len(labs) == 0 {
		return errors.New("lab: no lab")
	}
	var realms, domains strings.Builder
	for _, l := range labs {
		fmt.Fprintf(&realms, "\t%s = {\n\t\tkdc = %s\n\t}\n", l.Realm, l.IP)
		fmt.Fprintf(&domains, "\t.%[1]s = %[2]s\n\t%[1]s = %[2]s\n", l.DNSDomain, l.Realm)
	}
	conf := fmt.Sprintf("[libdefaults]\n\tdefault_realm = %s\n\tdns_lookup_kdc = false\n\tdns_lookup_realm = false\n\trdns = false\n\tforwardable = true\n\n[realms]\n%s\n[domain_realm]\n%s",
		labs[0].Realm, realms.String(), domains.String())
	return os.WriteFile(path, []byte(conf), 0o644)
}

// TrustWith makes a two-way forest trust between this lab's domain and
// other's (samba-tool domain trust create, run here, with both DCs'
// administrators), and validates it both ways. Both labs must have been
// started with Options.Trust, on distinct realms and NetBIOS names. The
// lab passwords go on samba-tool's command line: they are throwaway
// fixtures of this machine's own DCs.
func (l *Lab) TrustWith(ctx context.Context, other *Lab) error {
	if !l.trust || !other.trust {
		return errors.New("lab: TrustWith needs two labs started with Options.Trust")
	}
	for _, x := range []*Lab{l, other} {
		if err := waitPort(ctx, net.JoinHostPort(x.IP, "445")); err != nil {
			return fmt.Errorf("lab: %s's SMB: %w", x.Realm, err)
		}
	}
	conf := l.Krb5Conf + ".trust"
	if err := WriteKrb5Conf(conf, l, other); err != nil {
		return err
	}
	// Each DC, and samba-tool, find the other DC by name: in the hosts
	// files their mount namespaces see as /etc/hosts.
	if err := appendHost(l.hostsFile(), other); err != nil {
		return err
	}
	if err := appendHost(other.hostsFile(), l); err != nil {
		return err
	}
	if err := appendLMHost(l.etcSamba(), other); err != nil {
		return err
	}
	if err := appendLMHost(other.etcSamba(), l); err != nil {
		return err
	}
	cmd := l.namespaced(ctx, false,
		"samba-tool", "domain", "trust", "create", other.DNSDomain,
		"--type=forest", "--direction=both", "--create-location=both",
		"--ipaddress="+other.IP, "-U", other.Domain+`\`+other.AdminUser+"%"+other.AdminPassword,
		"--local-dc-ipaddress="+l.IP, "--local-dc-username="+l.AdminUser, "--local-dc-password="+l.AdminPassword,
		"--local-dc-workgroup="+l.Domain, "-s", l.SmbConf)
	cmd.Env = append(os.Environ(), "KRB5_CONFIG="+conf)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Success.") {
		return fmt.Errorf("lab: trust %s -> %s: %v\n%s", l.Realm, other.Realm, err, tail(string(out), 3000))
	}
	l.logf("forest trust with %s", other.Realm)
	return nil
}

// namespaced is a command that runs in a mount namespace of its own, as
// this DC sees the machine: its hosts file as /etc/hosts, its /etc/samba,
// for a multi-DC lab its resolv.conf, and for the DC's own processes
// (dcProcess) its /run/samba, where winbindd puts its sockets.
func (l *Lab) namespaced(ctx context.Context, dcProcess bool, name string, args ...string) *exec.Cmd {
	binds := [][2]string{{l.hostsFile(), "/etc/hosts"}, {l.etcSamba(), "/etc/samba"}}
	if l.multiDC {
		binds = append(binds, [2]string{l.resolvConf(), "/etc/resolv.conf"})
	}
	if dcProcess {
		binds = append(binds, [2]string{filepath.Join(l.Dir, "run-samba"), "/run/samba"})
	}
	script := `mkdir -p /run/samba /etc/samba`
	var argv []string
	for i, b := range binds {
		if b[1] == "/run/samba" {
			script += fmt.Sprintf(` && mkdir -p "$%d"`, 2*i+1)
		}
		script += fmt.Sprintf(` && mount --bind "$%d" "$%d"`, 2*i+1, 2*i+2)
		argv = append(argv, b[0], b[1])
	}
	script += fmt.Sprintf(` && shift %d && exec "$@"`, 2*len(binds))
	return exec.CommandContext(ctx, "unshare", append(append([]string{"-m", "--propagation", "private", "sh", "-c", script, "sh"}, argv...),
		append([]string{name}, args...)...)...)
}

// hostsFile is the /etc/hosts of a trust lab's mount namespace.
func (l *Lab) hostsFile() string { return filepath.Join(l.Dir, "hosts") }

// etcSamba is the /etc/samba of a trust lab's mount namespace: it holds
// lmhosts, where winbindd looks first for a domain's DCs (DOMAIN#1C);
// without DNS the alternative is a NetBIOS broadcast, which a DC answers
// only once it has registered its names, seconds after it starts.
func (l *Lab) etcSamba() string { return filepath.Join(l.Dir, "etc-samba") }

// appendLMHost names other's DC and domain in an lmhosts file.
func appendLMHost(dir string, other *Lab) error {
	f, err := os.OpenFile(filepath.Join(dir, "lmhosts"), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "%[1]s %[2]s\n%[1]s %[3]s#1C\n%[1]s %[3]s#1B\n", other.IP, strings.ToUpper(other.host), other.Domain)
	return err
}

// writeHosts starts the lab's hosts file (the machine's, and the DC) and
// its /etc/samba.
func (l *Lab) writeHosts() error {
	if err := os.MkdirAll(l.etcSamba(), 0o755); err != nil {
		return err
	}
	sys, err := os.ReadFile("/etc/hosts")
	if err != nil {
		return err
	}
	line := fmt.Sprintf("\n%s %s %s\n", l.IP, l.HostName, l.host)
	if l.first != nil {
		line += fmt.Sprintf("%s %s %s\n", l.first.IP, l.first.HostName, l.first.host)
	}
	return os.WriteFile(l.hostsFile(), append(sys, line...), 0o644)
}

// appendHost adds other's DC to a hosts file, in place: a bind mount of
// the file follows its inode, which a rename would replace.
func appendHost(path string, other *Lab) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "%s %s %s\n", other.IP, other.HostName, other.host)
	return err
}

// waitPort waits until addr accepts TCP connections (30 s at most).
func waitPort(ctx context.Context, addr string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// PID is the DC's process (the samba root process).
func (l *Lab) PID() int { return l.cmd.Process.Pid }
