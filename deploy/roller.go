package deploy

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/segkcd/segkcd"
	"github.com/segkcd/segkcd/ad"
	"github.com/segkcd/segkcd/exchange"
)

// Roller rolls the ASA's password when it is older than Every, as the
// scheduled task of RollAlternateServiceAccountPassword.ps1 does, for an
// MDM backend to run on a schedule in every replica. Replicas need no lock
// server: the roll is claimed in AD itself, by a compare-and-swap of a
// Journal in the ASA's note (ad.SwapNote), which exactly one replica wins;
// the others see the claim, or the fresh password, and leave it. A roll
// whose replica died is taken over once its claim is older than Lease, and
// finishes with the password it had started (exchange adopts an unfinished
// roll). The zero values are the defaults.
type Roller struct {
	// Deployment says where the ASA and the servers are; its ASA must be
	// set (single-server mode has nothing to roll).
	Deployment *Deployment
	// Every is the password age that makes a roll due; default 21 days.
	Every time.Duration
	// Jitter adds a random part of itself to Every at each check, so that
	// replicas started together do not all claim at once; default Every/100.
	Jitter time.Duration
	// Lease is how long a claimed, unfinished roll stays its replica's
	// before another may take it over; default 30 minutes (a roll takes
	// seconds per server).
	Lease time.Duration
	// Interval is how often Run checks; default 1 hour.
	Interval time.Duration
	// Name identifies this replica in the journal; default host:pid.
	Name string
	// Replicas, when set, are the names of every replica that may claim a
	// roll (Name of each). A claim in the note by anyone else is not
	// honoured: the roll goes ahead over it, and the log says so. Anyone
	// the directory lets write the ASA's note can write a claim; with
	// Replicas such a claim holds off no roll unless it takes a replica's
	// name. List every replica, or one that is missing is overridden while
	// it rolls.
	Replicas []string
	// Logger receives one line per check that does something, and
	// failures; nil means slog.Default().
	Logger *slog.Logger

	mu     sync.Mutex
	status RollStatus
	// heldSince is when this replica first saw a due roll held off by an
	// unfinished claim (or a foreign note), with AD's password unchanged
	// since (heldPwd): claims rewritten again and again keep it.
	heldSince time.Time
	heldPwd   int64
	started   time.Time // this Roller's first check
}

// since is when this Roller first checked (now, at the first call).
func (r *Roller) since(now time.Time) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started.IsZero() {
		r.started = now
	}
	return r.started
}

// RollStatus is what a Roller last saw and did, for an admin API and
// metrics. Times are zero until known.
type RollStatus struct {
	Replica string `json:"replica"`
	ASA     string `json:"asa"`
	Every   string `json:"every"` // the password age that makes a roll due
	// LastCheck is when the last check ended; OK whether it succeeded
	// (Result says what it found or did, LastError why it failed).
	LastCheck time.Time `json:"last_check,omitzero"`
	OK        bool      `json:"ok"`
	Result    string    `json:"result,omitempty"`
	// NextCheck is when Run checks next.
	NextCheck time.Time `json:"next_check,omitzero"`
	// LastRoll is when AD's password was last set: the last roll, by
	// whichever replica (or an administrator) made it. NextRoll is when it
	// is due again (the first check after it rolls).
	LastRoll time.Time `json:"last_roll,omitzero"`
	NextRoll time.Time `json:"next_roll,omitzero"`
	// RollingBy is the replica whose claim on an unfinished roll was
	// still open at the last check.
	RollingBy string `json:"rolling_by,omitempty"`
	// PDC is the DC that held the PDC emulator role at the last check: the
	// one DC the roll reads its claim on and writes to.
	PDC string `json:"pdc,omitempty"`
	// HeldSince is when this replica first found a roll that was due held
	// off by someone else's unfinished claim or by a foreign note, AD's
	// password unchanged since; zero when nothing holds a due roll off. A
	// real roll holds its claim seconds per server and at most Lease: a
	// HeldSince older than two leases is someone rewriting claims, or an
	// administrator's note in the way. Blocked says by what.
	HeldSince time.Time `json:"held_since,omitzero"`
	Blocked   string    `json:"blocked,omitempty"`
	// Rolls is how many rolls this replica finished (or took over and
	// finished); Failures how many of its checks failed.
	Rolls    int `json:"rolls"`
	Failures int `json:"failures"`
	// LastError is the last failed check's error, when it ended, and the
	// hint for the administrator; kept after later checks succeed.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	Hint        string    `json:"hint,omitempty"`
}

// Status returns what the Roller last saw and did. It is safe to call
// while Run runs.
func (r *Roller) Status() RollStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.status
	st.Replica, st.Every = r.name(), r.every().String()
	if r.Deployment != nil && r.Deployment.ASA != "" {
		st.ASA = r.Deployment.asaSAM()
	}
	return st
}

// seen is what one check learnt on its way, whatever its end.
type seen struct {
	pdc         string
	passwordSet time.Time
	pwd         int64
	rollingBy   string
	blocked     string // a due roll held off: by whom
}

// hintFor is the advice for a failed check: the cause's own, else ours.
func hintFor(err error) string {
	var h interface{ Hint() string }
	if errors.As(err, &h) && h.Hint() != "" {
		return h.Hint()
	}
	switch {
	case errors.Is(err, ErrForeignNote):
		return "the ASA's note (its info attribute) holds an administrator's text: move it elsewhere and clear the note; the Roller keeps its journal there"
	case errors.Is(err, ErrInvalid):
		return "fix the configuration and restart"
	case errors.Is(err, context.DeadlineExceeded):
		return "the roll did not finish within the lease: check that AD and every server's WinRM answer; a claimed roll is finished by the next check after the lease"
	}
	return "the next check tries again; a roll left half-done is finished, with the password it started, after the lease"
}

// The Roller's defaults, for programs that report or check them.
const (
	// DefaultEvery is Every's default, as the scheduled task of
	// RollAlternateServiceAccountPassword.ps1 rolls.
	DefaultEvery = 21 * 24 * time.Hour
	// DefaultLease is Lease's default.
	DefaultLease = 30 * time.Minute
	// DefaultInterval is Interval's default.
	DefaultInterval = time.Hour
)

// Journal is what the Roller keeps in the ASA's note: who claimed the
// roll and when, and the exchange roll journal (no password: a roll
// resumes by reading it back from the server that got it first).
type Journal struct {
	Kind    string    `json:"segkcd"` // always "asa-roll": a note of ours
	Owner   string    `json:"owner"`
	Claimed time.Time `json:"claimed"`
	Done    bool      `json:"done"`
	Roll    exchange.RollJournal
}

const journalKind = "asa-roll"

// ErrForeignNote is an ASA whose note holds something else than a
// Journal: the Roller leaves it alone rather than overwrite an
// administrator's text.
var ErrForeignNote = errors.New("deploy: the ASA's note is not a roll journal")

func (r *Roller) every() time.Duration {
	if r.Every > 0 {
		return r.Every
	}
	return DefaultEvery
}

func (r *Roller) jitter() time.Duration {
	if r.Jitter > 0 {
		return r.Jitter
	}
	return r.every() / 100
}

func (r *Roller) lease() time.Duration {
	if r.Lease > 0 {
		return r.Lease
	}
	return DefaultLease
}

func (r *Roller) name() string {
	if r.Name != "" {
		return r.Name
	}
	h, _ := os.Hostname()
	return h + ":" + strconv.Itoa(os.Getpid())
}

func (r *Roller) log() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}

// random is a uniform duration in [0, max).
func random(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	n, err := rand.Int(rand.Reader, big.NewInt(int64(max)))
	if err != nil {
		return 0
	}
	return time.Duration(n.Int64())
}

// fileTime is pwdLastSet (100 ns intervals since 1601) as a time.
func fileTime(v int64) time.Time {
	const epochDiff = 116444736000000000 // 1601 to 1970 in 100 ns
	return time.Unix(0, (v-epochDiff)*100)
}

// RollIfDue rolls the ASA's password if it is due and no other replica is
// rolling it, and reports what it did: Modified when it rolled (or
// finished another replica's roll), Unchanged with the reason otherwise.
// After a roll it checks that every server decrypts with AD's password.
// A check is bounded by Lease, so that it has stopped by the time another
// replica may take its claim over; Status tells what it found. A claim
// under the Roller's own Name made before its first check is taken for one
// of its dead runs, and taken over at once.
func (r *Roller) RollIfDue(ctx context.Context) (segkcd.Change, error) {
	ctx, cancel := context.WithTimeout(ctx, r.lease())
	defer cancel()
	var sn seen
	ch, err := r.rollIfDue(ctx, &sn)
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	st := &r.status
	st.LastCheck, st.OK, st.RollingBy = now, err == nil, sn.rollingBy
	if sn.pdc != "" {
		st.PDC = sn.pdc
	}
	if errors.Is(err, ErrForeignNote) && !sn.passwordSet.IsZero() && now.Sub(sn.passwordSet) >= r.every() {
		sn.blocked = "a note that is not a roll journal"
	}
	switch {
	case sn.blocked == "":
		r.heldSince = time.Time{}
	case r.heldSince.IsZero() || r.heldPwd != sn.pwd:
		r.heldSince, r.heldPwd = now, sn.pwd
	}
	st.HeldSince, st.Blocked = r.heldSince, sn.blocked
	if held := now.Sub(r.heldSince); sn.blocked != "" && held >= 2*r.lease() {
		r.log().Warn("a due ASA roll has been held off for longer than two leases", "asa", r.Deployment.asaSAM(),
			"by", sn.blocked, "since", r.heldSince, "hint", "a real roll holds its claim at most one lease: find who writes the ASA's note (its info attribute), and set the Roller's Replicas")
	}
	if !sn.passwordSet.IsZero() {
		st.LastRoll, st.NextRoll = sn.passwordSet, sn.passwordSet.Add(r.every())
	}
	if err != nil {
		st.Failures++
		st.Result, st.LastError, st.LastErrorAt, st.Hint = "failed", err.Error(), now, hintFor(err)
		return ch, err
	}
	if ch.Changed() {
		st.Rolls++
	}
	st.Result = strings.Join(ch.Details, "; ")
	return ch, nil
}

func (r *Roller) rollIfDue(ctx context.Context, sn *seen) (segkcd.Change, error) {
	d := r.Deployment
	if d == nil || d.ASA == "" {
		return segkcd.Change{}, fmt.Errorf("%w: the Roller needs a Deployment with an ASA", ErrInvalid)
	}
	if err := d.check(); err != nil {
		return segkcd.Change{}, err
	}
	const what = "roll ASA password"
	sam := d.asaSAM()
	ch := segkcd.Change{What: what, Object: sam, Action: segkcd.Unchanged}
	// AD replicates multi-master: a compare-and-swap is a lock only if
	// every replica swaps on the same DC. All of the roll's reads and
	// writes go to the PDC emulator, and its ticket checks to that DC's
	// KDC (another DC issues tickets under the old key until replication
	// reaches it). Without the PDC emulator the roll waits.
	d, pdc, err := d.atPDC(ctx)
	sn.pdc = pdc.DNSHostName
	if err != nil {
		return segkcd.Change{}, err
	}
	defer d.AD.Close()
	acct, err := d.AD.FindAccount(ctx, sam)
	if err != nil {
		return segkcd.Change{}, err
	}
	note, err := d.AD.ReadNote(ctx, sam)
	if err != nil {
		return segkcd.Change{}, err
	}
	sn.passwordSet, sn.pwd = fileTime(acct.PasswordLastSet), acct.PasswordLastSet
	j, err := ParseJournal(note)
	if err != nil {
		return segkcd.Change{}, fmt.Errorf("%w (%s's %s attribute); clear it to let the Roller work", err, sam, ad.NoteAttribute)
	}
	now := time.Now()
	age := now.Sub(fileTime(acct.PasswordLastSet))
	takeover := false
	if note != "" && !j.Done {
		// A claim from further in the future than clocks drift apart
		// (Kerberos allows 5 minutes) is no replica's, nor is one by a
		// name Replicas does not list: whoever may write the note must
		// not hold off every roll with it.
		// A claim under this replica's own name, made before this Roller's
		// first check, is not a roll it is making: its previous run's, which
		// died. Taken over. A newer one is honoured like any other: two
		// processes given one name must not roll at once.
		// An apply's claim (Deployment.Apply rolls the credential
		// too) is honoured for its lease like a replica's; held off
		// too long, it shows in HeldSince as any claim does.
		stranger := len(r.Replicas) > 0 && !slices.Contains(r.Replicas, j.Owner) && !strings.HasPrefix(j.Owner, "apply ")
		own := j.Owner == r.name() && j.Claimed.Before(r.since(now))
		if a, open := j.open(now, r.lease()); open && !stranger && !own {
			sn.rollingBy = j.Owner
			if age >= r.every() {
				sn.blocked = "the unfinished claim of " + j.Owner
			}
			ch.Details = []string{fmt.Sprintf("%s has been rolling it for %s", j.Owner, a.Round(time.Second))}
			return ch, nil
		}
		switch {
		case stranger:
			r.log().Warn("overriding a roll claim by a name that is not one of the replicas", "asa", sam, "owner", j.Owner,
				"claimed", j.Claimed, "replicas", r.Replicas)
		case own:
			r.log().Warn("taking over an unfinished roll claimed under this replica's own name, which it is not making", "asa", sam,
				"claimed", j.Claimed)
		}
		takeover = true
	}
	if due := r.every() + random(r.jitter()); !takeover && age < due {
		ch.Details = []string{fmt.Sprintf("password set %s ago, due after %s", age.Round(time.Second), r.every())}
		return ch, nil
	}

	// Claim the roll: of replicas swapping the same old note, one wins.
	claim := Journal{Kind: journalKind, Owner: r.name(), Claimed: now}
	if takeover {
		claim.Roll = j.Roll
	}
	cur, err := marshal(claim)
	if err != nil {
		return segkcd.Change{}, err
	}
	if _, err := d.AD.SwapNote(ctx, sam, note, cur); err != nil {
		if errors.Is(err, ad.ErrConflict) {
			ch.Details = []string{"another replica claimed the roll first"}
			return ch, nil
		}
		return segkcd.Change{}, err
	}
	log := r.log().With("asa", sam, "replica", claim.Owner)
	if takeover {
		log.Info("taking over an unfinished ASA roll", "from", j.Owner, "claimed", j.Claimed)
	} else {
		log.Info("rolling the ASA password", "age", age.Round(time.Second))
	}
	org, roll := d.org(), d.roll()
	var res *exchange.RollResult
	reached := false // the taken-over roll had reached AD and every server
	switch {
	case takeover && fileTime(acct.PasswordLastSet).After(j.Claimed):
		// AD's password was set after the claim: the dead replica's roll
		// got that far. If every server holds it as Latest, only the
		// journal was left; another roll now would be a needless one.
		states, cerr := org.CheckASA(ctx, roll)
		reached = cerr == nil
		for _, st := range states {
			reached = reached && st.LatestIsCurrent
		}
		if !reached {
			res, err = org.RollASAPassword(ctx, roll)
		}
	case takeover && j.Roll.Source != "":
		res, err = org.ResumeJournal(ctx, j.Roll, roll)
	default:
		res, err = org.RollASAPassword(ctx, roll)
	}
	if res != nil {
		claim.Roll = res.Journal
	}
	if err != nil {
		// Keep the claim with what the roll recorded: after Lease another
		// replica (or this one) takes it over and finishes it.
		if serr := d.recordJournal(ctx, cur, claim); serr != nil {
			log.Warn("could not record the failed roll's journal", "err", serr)
		}
		log.Error("ASA roll failed", "err", err)
		return segkcd.Change{}, err
	}
	if a, err := d.AD.FindAccount(ctx, sam); err == nil {
		sn.passwordSet = fileTime(a.PasswordLastSet)
	}
	claim.Done = true
	done, err := marshal(claim)
	if err != nil {
		return segkcd.Change{}, err
	}
	if _, err := d.AD.SwapNote(ctx, sam, cur, done); err != nil {
		return segkcd.Change{}, err
	}
	states, err := org.CheckASA(ctx, roll)
	if err != nil {
		return segkcd.Change{}, err
	}
	for _, st := range states {
		if !st.LatestIsCurrent {
			return segkcd.Change{}, fmt.Errorf("deploy: after the roll, %s", st)
		}
	}
	ch.Action = segkcd.Modified
	ch.Details = []string{fmt.Sprintf("password was %s old; new one on %s, then in AD", age.Round(time.Second), strings.Join(roll.Servers, ", "))}
	switch {
	case reached:
		ch.Details = []string{"the roll " + j.Owner + " started had reached every server and AD; recorded it as done"}
	case takeover:
		ch.Details = append(ch.Details, "finished the roll "+j.Owner+" started")
	}
	log.Info("ASA password rolled", "servers", roll.Servers)
	return ch, nil
}

// RollCheck is what Check read: nothing in it was changed.
type RollCheck struct {
	// PasswordSet is when AD's ASA password was last set; Due when it is
	// due again (PasswordSet + Every).
	PasswordSet, Due time.Time
	// Journal is the ASA's note: zero when empty.
	Journal Journal
	// Servers is whether each server holds AD's password.
	Servers []exchange.ServerState
	// DCs is each DC's view of the ASA (Deployment.ASAViews): replication
	// lag, and DCs that are down, show there. Empty when the DCs could not
	// be listed.
	DCs []DCView
}

// Check reads what a roll depends on, and changes nothing: AD's password
// time and the journal in the ASA's note (over the Deployment's AD
// connection, with its rights), and each server's credential (over the
// management shell, with a ticket to the ASA). For a configuration check
// before Run. An error is what stops a roll: an unreadable account or
// note, a foreign note, a server whose state cannot be read.
func (r *Roller) Check(ctx context.Context) (RollCheck, error) {
	d := r.Deployment
	if d == nil || d.ASA == "" {
		return RollCheck{}, fmt.Errorf("%w: the Roller needs a Deployment with an ASA", ErrInvalid)
	}
	if err := d.check(); err != nil {
		return RollCheck{}, err
	}
	sam := d.asaSAM()
	acct, err := d.AD.FindAccount(ctx, sam)
	if err != nil {
		return RollCheck{}, err
	}
	var rc RollCheck
	rc.PasswordSet = fileTime(acct.PasswordLastSet)
	rc.Due = rc.PasswordSet.Add(r.every())
	note, err := d.AD.ReadNote(ctx, sam)
	if err != nil {
		return rc, err
	}
	rc.DCs, _ = d.ASAViews(ctx)
	if rc.Journal, err = ParseJournal(note); err != nil {
		return rc, fmt.Errorf("%w (%s's %s attribute); clear it to let the Roller work", err, sam, ad.NoteAttribute)
	}
	if rc.Servers, err = d.org().CheckASA(ctx, d.roll()); err != nil {
		return rc, err
	}
	for _, st := range rc.Servers {
		if st.Err != nil {
			return rc, fmt.Errorf("deploy: %s", st)
		}
	}
	return rc, nil
}

// ParseJournal reads a Journal from the ASA's note (anyone who may write
// the account's Notes can put text there): "" is no journal; anything but
// a Journal is ErrForeignNote.
func ParseJournal(note string) (Journal, error) {
	var j Journal
	if note == "" {
		return j, nil
	}
	if err := json.Unmarshal([]byte(note), &j); err != nil || j.Kind != journalKind {
		return Journal{}, fmt.Errorf("%w: %d characters of something else", ErrForeignNote, len(note))
	}
	return j, nil
}

// open is how long ago j was claimed, and whether that claim still
// holds: unfinished, younger than lease, and not from further ahead than
// clocks drift apart (Kerberos allows 5 minutes).
func (j Journal) open(now time.Time, lease time.Duration) (time.Duration, bool) {
	a := now.Sub(j.Claimed)
	return a, j.Kind != "" && !j.Done && a < lease && a > -5*time.Minute
}

// recordJournal swaps the ASA's note from cur to j, within 30 seconds even
// when ctx has ended: a roll cut short leaves its journal for whoever
// finishes it.
func (d *Deployment) recordJournal(ctx context.Context, cur string, j Journal) error {
	next, err := marshal(j)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_, err = d.AD.SwapNote(sctx, d.asaSAM(), cur, next)
	return err
}

func marshal(j Journal) (string, error) {
	b, err := json.Marshal(j)
	if err != nil {
		return "", err
	}
	if len(b) > 1024 {
		return "", fmt.Errorf("deploy: roll journal of %d bytes does not fit the ASA's note (1024)", len(b))
	}
	return string(b), nil
}

// Run checks every Interval (with a random tenth of it added, so replicas
// drift apart) until ctx ends, rolling when due. Failures are logged and
// retried at the next check; Run returns ctx's error.
func (r *Roller) Run(ctx context.Context) error {
	interval := r.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	for {
		if ch, err := r.RollIfDue(ctx); err != nil {
			r.log().Error("ASA roll check failed", "err", err)
		} else if ch.Changed() {
			r.log().Info("ASA roll", "change", ch.String())
		}
		wait := interval + random(interval/10)
		r.mu.Lock()
		r.status.NextCheck = time.Now().Add(wait)
		r.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
