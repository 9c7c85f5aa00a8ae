package kerberos

import "time"

// SetClock replaces a client's clock, for tests in package kerberos_test.
func SetClock(c *Client, now func() time.Time) { c.now = now }
