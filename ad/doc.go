// Package ad provisions Active Directory for Kerberos Constrained Delegation
// over LDAP (go-ldap v3): the Exchange Alternate Service Account (a computer
// account), the gateway's service account, their SPNs with setspn -S
// duplicate checks, constrained delegation with protocol transition,
// passwords, encryption types, group membership, a delegation audit, resource-based constrained delegation
// (msDS-AllowedToActOnBehalfOfOtherIdentity, a security descriptor this
// package reads and writes), and a compare-and-swap note on an account
// (ReadNote, SwapNote) that processes without a lock server share.
//
// Every operation takes a context and is idempotent: it reads first, writes
// only what differs, and returns a segkcd.Change whose Action is segkcd.Unchanged when the
// directory already was as asked. So a provisioning program can run again
// and again, and say each time what it did.
//
// Connections are always encrypted (LDAPS, or StartTLS on ldap://): AD
// refuses password writes in clear, and so does this package, before
// sending anything. Binds are simple (DOMAIN\user or UPN) or Kerberos
// (GSSAPI with a kerberos.Client, the one that also asks for S4U tickets and logs
// on to WinRM).
//
// Errors are *Error values that keep the LDAP result code and the AD
// extended error code parsed from the DC's diagnostic message; errors.Is
// matches them against sentinels such as ErrDuplicateSPN or
// ErrPasswordPolicy, and each message says what an administrator can do
// about it. No error or Change ever contains a password.
//
// Filter values are escaped with ldap.EscapeFilter and DN values with
// ldap.EscapeDN throughout.
package ad
