//go:build !unix

package seg

// openFileLimit is unknown here: NewServer's default bound on pending
// connections applies.
func openFileLimit() int { return 0 }
