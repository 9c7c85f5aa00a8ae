//go:build !linux

package seg

import "errors"

// Long polls are parked on Linux only (epoll); elsewhere they are held on
// the handler's goroutine.
const pollerSupported = false

type poller struct{}

func (*poller) add(*parkedPoll) error {
	return errors.New("seg: long polls are parked on Linux only")
}

func (*poller) wake(*parkedPoll, wake) {}
