//go:build !linux

package park

import (
	"context"
	"net"
	"time"
)

// Poller watches nothing here: long polls are parked on Linux only, and
// Watch fails with ErrUnsupported (the caller waits on a goroutine).
type Poller struct{}

// Watch is never made here.
type Watch struct{}

// Watch fails with ErrUnsupported.
func (*Poller) Watch(context.Context, net.Conn, net.Conn, time.Time, func(Reason)) (*Watch, error) {
	return nil, ErrUnsupported
}

// Stop reports false: nothing is watched.
func (*Watch) Stop() bool { return false }
