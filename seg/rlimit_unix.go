//go:build unix

package seg

import "syscall"

// openFileLimit is the process's open-file limit (soft: Go raises it to
// the hard limit at start), or 0 when it cannot be read.
func openFileLimit() int {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || l.Cur > 1<<30 {
		return 0
	}
	return int(l.Cur)
}
