package kerberos

import (
	"errors"
	"fmt"
	"os"

	"github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/credentials"
	"github.com/jcmturner/gokrb5/v8/keytab"
)

// The files a service reads (krb5.conf, credential caches, keytabs) are
// parsed by gokrb5, whose parsers panic on some malformed input (an empty
// ccache, a realm written on one line). These wrappers turn every such
// failure into an error, so a bad file cannot crash the gateway.

// maxFile bounds what is read from a Kerberos file: real ones are kilobytes.
const maxFile = 16 << 20

func readFile(op, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fail(op, path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fail(op, path, err)
	}
	if st.Size() > maxFile {
		return nil, fail(op, path, fmt.Errorf("%d bytes: not a Kerberos file", st.Size()))
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil && st.Size() > 0 {
		return nil, fail(op, path, err)
	}
	return b, nil
}

// ParseConfig parses krb5.conf text.
func ParseConfig(text string) (*config.Config, error) {
	var cfg *config.Config
	err := safely(func() (err error) { cfg, err = config.NewFromString(text); return err })
	if err != nil {
		return nil, fail("parse krb5.conf", "", err)
	}
	return cfg, nil
}

// LoadCCache reads an MIT credential cache file (as kinit writes it).
func LoadCCache(path string) (*credentials.CCache, error) {
	b, err := readFile("load ccache", path)
	if err != nil {
		return nil, err
	}
	cc, err := ParseCCache(b)
	if err != nil {
		return nil, fail("load ccache", path, errors.Unwrap(err))
	}
	return cc, nil
}

// ParseCCache parses an MIT credential cache. A cache without a default
// principal is refused.
func ParseCCache(b []byte) (*credentials.CCache, error) {
	const op = "parse ccache"
	if len(b) < 4 {
		return nil, fail(op, "", fmt.Errorf("%d bytes: too short for a credential cache", len(b)))
	}
	cc := new(credentials.CCache)
	if err := safely(func() error { return cc.Unmarshal(b) }); err != nil {
		return nil, fail(op, "", err)
	}
	if len(cc.DefaultPrincipal.PrincipalName.NameString) == 0 || cc.DefaultPrincipal.Realm == "" {
		return nil, fail(op, "", errors.New("no default principal"))
	}
	return cc, nil
}

// LoadKeytab reads a keytab file (MIT format, as ktutil or samba-tool
// domain exportkeytab write it).
func LoadKeytab(path string) (*keytab.Keytab, error) {
	b, err := readFile("load keytab", path)
	if err != nil {
		return nil, err
	}
	kt, err := ParseKeytab(b)
	if err != nil {
		return nil, fail("load keytab", path, errors.Unwrap(err))
	}
	return kt, nil
}

// ParseKeytab parses a keytab. One without entries is refused.
func ParseKeytab(b []byte) (*keytab.Keytab, error) {
	const op = "parse keytab"
	kt := keytab.New()
	if err := safely(func() error { return kt.Unmarshal(b) }); err != nil {
		return nil, fail(op, "", err)
	}
	if len(kt.Entries) == 0 {
		return nil, fail(op, "", errors.New("no keys"))
	}
	return kt, nil
}
