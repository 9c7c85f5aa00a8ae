package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/segkcd/segkcd/ad"
)

// A domain of several DCs (Options.MultiDC, AddDC): each DC runs in a mount
// namespace of its own, as a trust lab's does, with its own /etc/hosts
// (every DC of the domain), /etc/samba and /run/samba, and an
// /etc/resolv.conf that names its own DNS server. Samba's internal DNS
// serves the domain's SRV records on each DC's loopback address; the join
// registers no records for a 127.x address, so AddDC adds the new DC's A
// and CNAME records itself.

// resolvConf is the /etc/resolv.conf of a multi-DC lab's mount namespace.
func (l *Lab) resolvConf() string { return filepath.Join(l.Dir, "resolv.conf") }

// writeMultiDC writes the resolver a DC's namespace sees: its own DNS
// server, which knows every DC of the domain and their KDCs (a DC logs on
// to its replication partners with Kerberos, through its own KDC: Krb5Conf,
// given to samba as KRB5_CONFIG).
func (l *Lab) writeMultiDC() error {
	return os.WriteFile(l.resolvConf(), []byte("nameserver "+l.IP+"\n"), 0o644)
}

// nsCommand runs a command in a mount namespace that sees this DC's hosts
// file, /etc/samba and resolver, with KRB5_CONFIG set to krb5 (empty: this
// DC's Krb5Conf): samba-tool finds DCs by name there.
func (l *Lab) nsCommand(ctx context.Context, krb5 string, name string, args ...string) *exec.Cmd {
	if krb5 == "" {
		krb5 = l.Krb5Conf
	}
	cmd := l.namespaced(ctx, false, name, args...)
	cmd.Env = append(os.Environ(), "KRB5_CONFIG="+krb5)
	return cmd
}

// runNS runs nsCommand and returns its output.
func (l *Lab) runNS(ctx context.Context, name string, args ...string) (string, error) {
	out, err := l.nsCommand(ctx, "", name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, args[0], err, tail(string(out), 1500))
	}
	return string(out), nil
}

// AddDC joins a second (third, ...) domain controller to this lab's
// domain, as an administrator does with samba-tool domain join ... DC, on a
// free loopback address and host name host (dc2), and starts it. Both DCs
// then replicate with DRS both ways (AddDC starts each direction once, as
// the first replication would otherwise wait for a 5-minute timer) and
// serve the domain's SRV records with both. This lab must have been started
// with Options.MultiDC. The new DC shares this lab's CA (CAFile) and
// administrator; Close stops it and removes its directory. Joining takes
// about 5 s and each DC about 130 MiB.
func (l *Lab) AddDC(ctx context.Context, host string) (*Lab, error) {
	if !l.multiDC {
		return nil, errors.New("lab: AddDC needs a lab started with Options.MultiDC")
	}
	host = strings.ToLower(host)
	if host == "" || host == l.host {
		return nil, fmt.Errorf("lab: AddDC needs a host name other than %s", l.host)
	}
	d := &Lab{trust: true, multiDC: true, first: l, host: host, logf: l.logf,
		Realm: l.Realm, Domain: l.Domain, DNSDomain: l.DNSDomain, BaseDN: l.BaseDN,
		AdminUser: l.AdminUser, AdminPassword: l.AdminPassword}
	d.HostName = host + "." + d.DNSDomain
	dir, err := os.MkdirTemp("", "segkcd-lab-")
	if err != nil {
		return nil, err
	}
	d.Dir, d.dcDir = dir, dir
	_ = os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o600)
	ok := false
	defer func() {
		if !ok {
			d.Close()
		}
	}()
	if d.IP, err = freeLoopback(); err != nil {
		return nil, err
	}
	d.derive()

	// Names first: the join, and each DC, find the others in their hosts
	// files; the join's resolver is the first DC's DNS server.
	if err := d.writeHosts(); err != nil {
		return nil, err
	}
	if err := appendHost(l.hostsFile(), d); err != nil {
		return nil, err
	}
	if err := appendLMHost(d.etcSamba(), l); err != nil {
		return nil, err
	}
	if err := appendLMHost(l.etcSamba(), d); err != nil {
		return nil, err
	}
	if err := os.WriteFile(d.resolvConf(), []byte("nameserver "+l.IP+"\n"), 0o644); err != nil {
		return nil, err
	}
	empty := filepath.Join(d.Dir, "empty.conf")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		return nil, err
	}
	t0 := time.Now()
	// The administrator's password goes on samba-tool's command line: it
	// is a throwaway fixture of this machine's own DC.
	join := d.nsCommand(ctx, l.Krb5Conf, "samba-tool", "domain", "join", d.DNSDomain, "DC",
		"-U", l.Domain+`\`+l.AdminUser+"%"+l.AdminPassword, "--server="+l.IP, "--targetdir="+d.Dir,
		"--dns-backend=SAMBA_INTERNAL", "-s", empty, "--option=netbios name="+strings.ToUpper(host),
		"--option=interfaces="+d.IP+"/8", "--option=bind interfaces only=yes")
	if out, err := join.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("lab: join %s: %w\n%s", d.HostName, err, tail(string(out), 3000))
	}
	l.logf("joined %s to %s (%.1fs)", d.HostName, d.Realm, time.Since(t0).Seconds())
	if err := d.configure(); err != nil {
		return nil, err
	}
	if err := d.start(ctx); err != nil {
		return nil, err
	}
	if err := l.register(ctx, d); err != nil {
		return nil, err
	}
	l.logf("%s and %s replicate (%.1fs)", l.HostName, d.HostName, time.Since(t0).Seconds())
	ok = true
	return d, nil
}

// NCs are the domain's five naming contexts, which every DC replicates.
func (l *Lab) NCs() []string {
	return []string{l.BaseDN, "CN=Configuration," + l.BaseDN, "CN=Schema,CN=Configuration," + l.BaseDN,
		"DC=DomainDnsZones," + l.BaseDN, "DC=ForestDnsZones," + l.BaseDN}
}

// register adds d's DNS records on this DC (an A record, and the CNAME
// <NTDS Settings objectGUID>._msdcs that DCs find replication partners by),
// then has each DC pull every naming context from the other once.
func (l *Lab) register(ctx context.Context, d *Lab) error {
	guid, err := d.ntdsGUID(ctx)
	if err != nil {
		return err
	}
	admin := "-U" + l.Domain + `\` + l.AdminUser + "%" + l.AdminPassword
	for _, rec := range [][]string{
		{l.DNSDomain, d.host, "A", d.IP},
		{"_msdcs." + l.DNSDomain, guid, "CNAME", d.HostName},
	} {
		args := append([]string{"dns", "add", l.IP}, rec...)
		if out, err := l.runNS(ctx, "samba-tool", append(args, admin)...); err != nil && !strings.Contains(out, "already exist") {
			return fmt.Errorf("lab: DNS record %v: %w", rec, err)
		}
	}
	// The DNS partitions reach the new DC through a local pull.
	for _, nc := range l.NCs()[3:] {
		if _, err := d.runNS(ctx, "samba-tool", "drs", "replicate", d.host, l.host, nc, "--local", "-s", d.SmbConf, admin); err != nil {
			return fmt.Errorf("lab: %s pulls %s: %w", d.host, nc, err)
		}
	}
	// The new DC's own records (SRV, A, _msdcs), as its dnsupdate service
	// would register them, in its own DNS server (over RPC, with its
	// machine account); DC1 pulls them next.
	// The A and CNAME records added above fail as existing.
	out, err := d.runNS(ctx, "samba_dnsupdate", "--use-samba-tool", "--current-ip="+d.IP, "--rpc-server-ip="+d.IP,
		"--all-names", "-s", d.SmbConf)
	if err != nil && strings.Count(out, "ERROR(") != strings.Count(out, "ALREADY_EXISTS]") {
		return fmt.Errorf("lab: %s's DNS records: %w", d.host, err)
	}
	for _, nc := range l.NCs() {
		if _, err := l.runNS(ctx, "samba-tool", "drs", "replicate", l.host, d.host, nc, admin); err != nil {
			return fmt.Errorf("lab: %s pulls %s: %w", l.host, nc, err)
		}
	}
	return nil
}

// ntdsGUID is the objectGUID of the DC's NTDS Settings object, read from
// its own database.
func (l *Lab) ntdsGUID(ctx context.Context) (string, error) {
	out, err := l.Ldbsearch(ctx, l.NTDSSettings(), "(objectClass=nTDSDSA)", "objectGUID", "-s", "base")
	if err != nil {
		return "", err
	}
	for _, line := range ScanLines(out) {
		if v, ok := strings.CutPrefix(line, "objectGUID: "); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("lab: no objectGUID on %s", l.NTDSSettings())
}

// NTDSSettings is the DN of the DC's NTDS Settings object: what the domain
// object's fSMORoleOwner names when the DC holds the PDC emulator role.
func (l *Lab) NTDSSettings() string {
	return "CN=NTDS Settings,CN=" + strings.ToUpper(l.host) + ",CN=Servers,CN=Default-First-Site-Name,CN=Sites,CN=Configuration," + l.BaseDN
}

// Kill ends the DC at once (SIGKILL to all its processes), as a crash or a
// power cut does; Restart starts it again on its database.
func (l *Lab) Kill() error {
	if l.cmd == nil || l.cmd.Process == nil {
		return errors.New("lab: samba is not running")
	}
	_ = syscall.Kill(-l.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-l.done:
	case <-time.After(10 * time.Second):
		return errors.New("lab: samba did not end within 10 s of SIGKILL")
	}
	// Workers that outlived the root process (they share its group).
	_ = syscall.Kill(-l.cmd.Process.Pid, syscall.SIGKILL)
	return nil
}

// SeizePDC makes this DC the PDC emulator by seizing the role (samba-tool
// fsmo seize, which works with the holder down), as an administrator does
// when the holder is gone for good.
func (l *Lab) SeizePDC(ctx context.Context) error {
	out, err := l.runNS(ctx, "samba-tool", "fsmo", "seize", "--role=pdc", "--force", "-H", "ldap://"+l.HostName,
		"-U"+l.Domain+`\`+l.AdminUser+"%"+l.AdminPassword)
	if err != nil {
		return fmt.Errorf("lab: seize the PDC emulator on %s: %w", l.host, err)
	}
	if !strings.Contains(strings.ToLower(out), "seize") {
		return fmt.Errorf("lab: seize the PDC emulator on %s: %s", l.host, tail(out, 500))
	}
	return nil
}

// Resolver resolves names with the DNS servers of dcs (Samba's), each
// tried in order: a client of the lab's domain whose DNS is AD's, as a
// Windows client's is.
func Resolver(dcs ...*Lab) *net.Resolver {
	var servers []string
	for _, dc := range dcs {
		servers = append(servers, dc.IP)
	}
	return ad.DNSResolver(servers...)
}

// InboundReplication turns this DC's inbound replication off or on
// (samba-tool drs options --dsa-option=±DISABLE_INBOUND_REPL), as an
// administrator does: a DC that lags behind, for as long as a test needs.
func (l *Lab) InboundReplication(ctx context.Context, on bool) error {
	opt := "+DISABLE_INBOUND_REPL"
	if on {
		opt = "-DISABLE_INBOUND_REPL"
	}
	_, err := l.runNS(ctx, "samba-tool", "drs", "options", l.host, "--dsa-option="+opt,
		"-U"+l.Domain+`\`+l.AdminUser+"%"+l.AdminPassword)
	return err
}

// PullFrom has this DC pull every naming context from other now (samba-tool
// drs replicate), rather than wait for a notification.
func (l *Lab) PullFrom(ctx context.Context, other *Lab) error {
	for _, nc := range l.NCs() {
		if _, err := l.runNS(ctx, "samba-tool", "drs", "replicate", l.host, other.host, nc,
			"-U"+l.Domain+`\`+l.AdminUser+"%"+l.AdminPassword); err != nil {
			return err
		}
	}
	return nil
}
