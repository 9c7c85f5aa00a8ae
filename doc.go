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
// operation in its own package:
//
//   - ad: the ASA computer account, the gateway's service account, SPNs
//     with setspn -S duplicate checks, constrained delegation with protocol
//     transition, passwords and encryption types, over LDAP.
//   - kerberos: S4U2Self and S4U2Proxy on gokrb5, a per-user ticket cache,
//     SPNEGO Negotiate headers, keytabs from passwords, an acceptor.
//   - exchange: the ASA credential on every Exchange server (roll, copy,
//     status, removal), over WinRM.
//   - iis: Windows authentication on the ActiveSync and EWS virtual
//     directories, and IIS_IUSRS membership, over WinRM.
//   - seg: the gateway itself, an http.Handler: device authentication by
//     client certificate or Basic, S4U tickets from a per-user cache,
//     Negotiate to Exchange over connections that carry one user each.
//
// The order matters. Create the ASA (AES only). Give every Exchange server
// its credential, and only then reset its password in AD. Register the mail
// SPN on the ASA only once Exchange can decrypt tickets for it. Then create
// the service account with TRUSTED_TO_AUTH_FOR_DELEGATION and
// msDS-AllowedToDelegateTo set to the mail SPNs. Last, set IIS to Negotiate
// with kernel mode and app-pool credentials. examples/provision runs the
// whole procedure; examples/s4u gets a ticket as a user, like kvno -U;
// examples/gateway runs the gateway from a JSON configuration. The
// Exchange and IIS packages are tested against a WS-Management test host
// that models Windows; no real Windows host is reachable where segkcd is built.
//
// This package holds documentation only; import the subpackages.
package segkcd
