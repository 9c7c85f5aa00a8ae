package seg

// What the external tests (package seg_test) read that callers need not.

// UsersForTest is how many users have a pool.
func (p *UserPools) UsersForTest() int { return p.userCount() }

// SizeForTest is how many names are remembered, accounts and refusals.
func (a *Accounts) SizeForTest() int { return a.size() }
