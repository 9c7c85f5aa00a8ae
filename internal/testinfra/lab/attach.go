package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// SharedEnv names the environment variable through which one lab serves
// every test binary of a run: `make test` starts the lab with labrun -share,
// which sets it to the lab's directory, and Shared attaches to it instead of
// provisioning a DC of its own.
const SharedEnv = "SEGKCD_SHARED_LAB"

// servingFile, in a running lab's directory, says where its DC listens.
const servingFile = "serving.json"

// serving is what Attach needs besides the state file.
type serving struct {
	IP   string `json:"ip"`
	Host string `json:"host"`
}

// errAttached refuses what would disturb the other users of a shared DC.
var errAttached = errors.New("lab: this DC serves every test binary of the run; " +
	"a test that stops, pauses or restarts its DC needs a lab of its own (Shared.Own)")

func (l *Lab) writeServing() error {
	b, _ := json.Marshal(serving{IP: l.IP, Host: l.host})
	return os.WriteFile(filepath.Join(l.dcDir, servingFile), b, 0o600)
}

// Attach returns the lab that another process started in dir and still
// runs. The lab is the same domain and DC; what is this process's own is
// Dir, a new temporary directory for credential caches, keytabs and other
// files, which Close removes. Attached labs refuse Pause, Resume and
// Restart: other processes use the DC. Several processes that attach must
// keep out of each other's way in the domain too: each uses account names
// and SPNs of its own.
func Attach(ctx context.Context, dir string) (*Lab, error) {
	st, err := readState(dir)
	if err != nil {
		return nil, fmt.Errorf("lab: attach %s: %w", dir, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, servingFile))
	if err != nil {
		return nil, fmt.Errorf("lab: attach %s: no DC serves it: %w", dir, err)
	}
	var sv serving
	if err := json.Unmarshal(b, &sv); err != nil {
		return nil, fmt.Errorf("lab: attach %s: %s: %w", dir, servingFile, err)
	}
	l := &Lab{Realm: st.Realm, Domain: st.Domain, AdminPassword: st.AdminPassword, AdminUser: "Administrator",
		IP: sv.IP, host: sv.Host, dcDir: dir, attached: true, logf: func(string, ...any) {}}
	l.derive()
	deadline := time.Now().Add(10 * time.Second)
	for !l.ready() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("lab: attach %s: the DC on %s does not answer", dir, l.IP)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if l.Dir, err = os.MkdirTemp("", "segkcd-lab-user-"); err != nil {
		return nil, err
	}
	_ = os.WriteFile(filepath.Join(l.Dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o600)
	return l, nil
}
