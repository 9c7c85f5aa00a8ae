package ad

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// SRVResolver looks up DNS SRV records. *net.Resolver is one; give a
// net.Resolver whose Dial reaches the domain's DNS servers when the host's
// resolver does not.
type SRVResolver interface {
	LookupSRV(ctx context.Context, service, proto, name string) (cname string, addrs []*net.SRV, err error)
}

// DNSResolver is a resolver that asks the given DNS servers (host or
// host:port; AD's own, typically the DCs) over TCP, for Config.Resolver
// and Locator.Resolver where the host's resolver does not know the domain.
// Each query starts at the next server in turn and passes over a server
// that refuses the connection at once, so the resolver's second attempt
// after a server that failed (SERVFAIL) or hung (its timeout) goes to
// another; over UDP a dead server would cost the whole timeout.
func DNSResolver(servers ...string) *net.Resolver {
	addrs := make([]string, len(servers))
	for i, s := range servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(s, "53")
		}
		addrs[i] = s
	}
	var next atomic.Uint32
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		if len(addrs) == 0 {
			return nil, errors.New("ad: DNSResolver has no server")
		}
		start := int(next.Add(1)-1) % len(addrs)
		var errs []error
		for i := range addrs {
			a := addrs[(start+i)%len(addrs)]
			d := net.Dialer{Timeout: 2 * time.Second}
			c, err := d.DialContext(ctx, "tcp", a)
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
		}
		return nil, errors.Join(errs...)
	}}
}

// Locator finds a domain's domain controllers as Windows clients do: the
// DNS SRV records _ldap._tcp.dc._msdcs.<domain>, and first, when Site is
// set, _ldap._tcp.<site>._sites.dc._msdcs.<domain>, each ordered by
// priority and then at random by weight (RFC 2782).
type Locator struct {
	// Domain is the domain's DNS name (corp.example.com).
	Domain string
	// Site is the AD site whose DCs are tried first; empty: none.
	Site string
	// Resolver looks the records up; nil means net.DefaultResolver.
	Resolver SRVResolver
}

// DCs returns the LDAP addresses (host:port) of the domain's DCs in the
// order to try them: the site's first, then the others, each once.
func (l *Locator) DCs(ctx context.Context) ([]string, error) {
	return l.lookup(ctx, "ldap", "locate DCs")
}

// KDCs returns the addresses (host:port) of the domain's KDCs in the order
// to try them, from the SRV records _kerberos._tcp[.<site>._sites].dc._msdcs
// .<domain>, as Windows clients find them: for a krb5 configuration, which
// keeps its own list (Kerberos does not follow the LDAP connection's DC).
func (l *Locator) KDCs(ctx context.Context) ([]string, error) {
	return l.lookup(ctx, "kerberos", "locate KDCs")
}

// lookup resolves _<service>._tcp for the site, then the domain.
func (l *Locator) lookup(ctx context.Context, service, op string) ([]string, error) {
	if l == nil || l.Domain == "" || strings.ContainsAny(l.Domain, " /\\") {
		return nil, invalid(op, "", "the Locator needs the domain's DNS name")
	}
	res := l.Resolver
	if res == nil {
		res = net.DefaultResolver
	}
	domain := strings.TrimSuffix(l.Domain, ".")
	names := []string{"dc._msdcs." + domain}
	if l.Site != "" {
		names = append([]string{l.Site + "._sites.dc._msdcs." + domain}, names...)
	}
	var out []string
	var errs []error
	for _, name := range names {
		_, srvs, err := res.LookupSRV(ctx, service, "tcp", name)
		if err != nil {
			errs = append(errs, fmt.Errorf("_%s._tcp.%s: %w", service, name, err))
			continue
		}
		for _, s := range orderSRV(srvs, rand.IntN) {
			addr := net.JoinHostPort(strings.TrimSuffix(s.Target, "."), strconv.Itoa(int(s.Port)))
			if s.Target != "." && !slices.Contains(out, addr) {
				out = append(out, addr)
			}
		}
	}
	if len(out) == 0 {
		errs = append(errs, errors.New("no SRV record names a DC"))
		return nil, &Error{Op: op, Object: domain, Kind: ErrNoDC, Err: errors.Join(errs...)}
	}
	return out, nil
}

// orderSRV orders records as RFC 2782 says a client tries them: by
// priority, and within one priority by a weighted random draw (a record
// of weight 0 only after those of some weight, unless all are 0). intn is
// rand.IntN, or a fixed draw in tests.
func orderSRV(srvs []*net.SRV, intn func(int) int) []*net.SRV {
	rest := slices.Clone(srvs)
	slices.SortStableFunc(rest, func(a, b *net.SRV) int { return int(a.Priority) - int(b.Priority) })
	out := make([]*net.SRV, 0, len(rest))
	for len(rest) > 0 {
		// The run of one priority.
		n := 1
		for n < len(rest) && rest[n].Priority == rest[0].Priority {
			n++
		}
		group := rest[:n]
		rest = rest[n:]
		for len(group) > 0 {
			total := 0
			for _, s := range group {
				total += int(s.Weight)
			}
			i := 0
			if total > 0 {
				// Records of weight 0 have no share of the draw.
				pick := intn(total)
				for sum := 0; ; i++ {
					sum += int(group[i].Weight)
					if pick < sum {
						break
					}
				}
			}
			out = append(out, group[i])
			group = slices.Delete(slices.Clone(group), i, i+1)
		}
	}
	return out
}

// DialError is Dial's error when no DC could be reached and bound: each DC
// tried, in order, with its failure. It matches ErrNoDC, and through
// errors.Is and errors.As each failure (an *Error with ErrInvalidCredentials
// when every DC refused the bind, say).
type DialError struct {
	Tried []DCFailure
}

// DCFailure is one DC that Dial could not use.
type DCFailure struct {
	URL string
	Err error
}

func (e *DialError) Error() string {
	var b strings.Builder
	b.WriteString("ad: no domain controller could be reached: ")
	for i, f := range e.Tried {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(f.URL + ": " + f.Err.Error())
	}
	return b.String()
}

// Is matches ErrNoDC.
func (e *DialError) Is(target error) bool { return target == ErrNoDC }

// Unwrap gives each DC's failure.
func (e *DialError) Unwrap() []error {
	out := make([]error, len(e.Tried))
	for i, f := range e.Tried {
		out[i] = f.Err
	}
	return out
}

// Hint is ErrNoDC's advice.
func (e *DialError) Hint() string { return hints[ErrNoDC] }

// urls is the DCs Dial tries, in order: URL, then URLs, then what Locator
// finds (ldap:// with StartTLS on the SRV records' ports, or ldaps:// on 636
// when URL's scheme is ldaps).
func (cfg Config) urls(ctx context.Context) ([]string, error) {
	var out []string
	for _, u := range append([]string{cfg.URL}, cfg.URLs...) {
		if u != "" && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	if cfg.Locator != nil {
		loc := *cfg.Locator
		if loc.Resolver == nil && cfg.Resolver != nil {
			loc.Resolver = cfg.Resolver
		}
		dcs, err := loc.DCs(ctx)
		if err != nil && len(out) == 0 {
			return nil, err
		}
		for _, a := range dcs {
			u := "ldap://" + a
			if strings.HasPrefix(strings.ToLower(cfg.URL), "ldaps://") || cfg.URL == "" && !cfg.PlaintextKerberosBind {
				host, _, _ := net.SplitHostPort(a)
				u = "ldaps://" + net.JoinHostPort(host, "636")
			}
			if !slices.Contains(out, u) {
				out = append(out, u)
			}
		}
	}
	if len(out) == 0 {
		return nil, invalid("dial", "", "no DC: set URL, URLs or Locator")
	}
	return out, nil
}
