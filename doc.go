// Package segkcd is a Go SDK for Kerberos Constrained Delegation (KCD) from a
// mail gateway to Microsoft Exchange ActiveSync, the way VMware Workspace ONE
// Secure Email Gateway does it in its "KCD cross-domain" deployment.
//
// A gateway in a DMZ authenticates a phone (client certificate or Basic),
// then asks the internal domain's KDC for a ticket as that user: S4U2Self
// gives it an evidence ticket for the user to itself, S4U2Proxy trades the
// evidence for a ticket to Exchange's HTTP service. It forwards the
// ActiveSync request with "Authorization: Negotiate". All Exchange servers
// decrypt that ticket with one shared Alternate Service Account (ASA)
// credential, because the mail host name's SPN is registered on the ASA.
//
// Each administrative step of that setup is a typed, idempotent Go
// operation in its own package, and the whole procedure is one desired
// state:
//
//   - deploy: the seed procedure as a Deployment; Plan (a dry run in the
//     seed's order), Apply (safe to run again after any failure), Verify
//     (a real S4U ticket accepted with the ASA's credential), single-server
//     mode, and a Roller that keeps the ASA password fresh from several
//     replicas without a lock server.
//   - ad: the ASA computer account, the gateway's service account, SPNs
//     with setspn -S duplicate checks, constrained delegation with protocol
//     transition, passwords and encryption types, over LDAP.
//   - kerberos: S4U2Self and S4U2Proxy on gokrb5, a per-user ticket cache,
//     SPNEGO Negotiate headers, GSS-API wrap tokens, keytabs from
//     passwords, an acceptor. One Client serves S4U, the AD bind and WinRM.
//   - exchange: the ASA credential on every Exchange server (roll, copy,
//     status, removal), over WinRM.
//   - iis: Windows authentication on the ActiveSync and EWS virtual
//     directories, and IIS_IUSRS membership, over WinRM.
//   - winrs: PowerShell over WinRM's remote shell, the Shell that exchange
//     and iis take; winrs/winrstest is a WS-Management test host that
//     models Windows, for tests without a Windows host.
//   - seg: the gateway itself, an http.Handler: device authentication by
//     client certificate or Basic, S4U tickets from a per-user cache,
//     Negotiate to Exchange over connections that carry one user each.
//
// Every mutating operation of ad, exchange and iis returns a Change (this
// package) and an error that errors.As finds as the package's typed error,
// with a Hint for the administrator.
//
// The order matters. Create the ASA (AES only). Give every Exchange server
// its credential, and only then reset its password in AD. Register the mail
// SPN on the ASA only once Exchange can decrypt tickets for it. Then create
// the service account with TRUSTED_TO_AUTH_FOR_DELEGATION and
// msDS-AllowedToDelegateTo set to the mail SPNs. Last, set IIS to Negotiate
// with kernel mode and app-pool credentials. deploy does it in that order;
// examples/provision is its command line; examples/s4u gets a ticket as a
// user, like kvno -U; examples/gateway runs the gateway from a JSON
// configuration. The Exchange and IIS packages are tested against a
// WS-Management test host that models Windows; no real Windows host is
// reachable where segkcd is built.
package segkcd
