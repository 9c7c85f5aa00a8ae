package segkcd

import "strings"

// Change is what one mutating operation of ad, exchange or iis did, so
// that a second run of the same provisioning can say "unchanged" for
// every step, and a plan can say what a run would do.
type Change struct {
	What    string   // the operation: "set SPN", "configure Windows authentication", "roll ASA credential"
	Object  string   // what it acted on: a DN, "CAS1", "Default Web Site/Microsoft-Server-ActiveSync"
	Action  Action   // created, modified, unchanged or removed
	Details []string // the differences, e.g. "userAccountControl: 0x200 -> 0x1000200"
}

// Changed reports whether the operation wrote anything.
func (c Change) Changed() bool { return c.Action != Unchanged && c.Action != "" }

// String renders the change on one line.
func (c Change) String() string {
	s := string(c.Action) + " " + c.What + " " + c.Object
	if c.What == "" {
		s = string(c.Action) + " " + c.Object
	}
	if len(c.Details) > 0 {
		s += " (" + strings.Join(c.Details, "; ") + ")"
	}
	return s
}

// Action is what an operation did to its object.
type Action string

// Actions a Change reports.
const (
	Unchanged Action = "unchanged"
	Created   Action = "created"
	Modified  Action = "modified"
	Removed   Action = "removed"
)
