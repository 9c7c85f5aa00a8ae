// Package deploy is the seed procedure of a KCD deployment as desired
// state: a Deployment describes it all (the domain through an AD
// connection, the Alternate Service Account or single-server mode, the
// mail host names, the Exchange servers and their versions, the gateway's
// service account and its delegation targets, the virtual directories),
// and three calls make it so:
//
//   - Plan reads AD, Exchange and IIS and returns the differences, step
//     by step in the seed's order, writing nothing: a dry run.
//   - Apply makes them in that order, with a progress hook. Every step is
//     idempotent and reads back what it wrote, so Apply is safe to run
//     again after any failure.
//   - Verify reads everything back and proves the chain: a real S4U
//     ticket for a test user to the mail SPN, accepted by a keytab made
//     from the ASA credential the Exchange servers hold.
//
// The steps, in the seed's order: (1) the ASA computer account, AES only;
// (2) the ASA credential on every Exchange server, and only then the new
// password in AD (a roll, skipped when every server holds AD's password);
// (3) the mail SPNs on the ASA, with setspn -S's duplicate check; (4) the
// gateway's service account, HTTP/<account>, protocol transition and
// constrained delegation to the mail SPNs; (5) on every server, Windows
// authentication with Negotiate, kernel mode and app-pool credentials on
// ActiveSync (and EWS), and the service account in IIS_IUSRS.
//
// Delegation is classic constrained delegation (msDS-AllowedToDelegateTo on
// the gateway's account) or, with ResourceBased, resource-based (the
// gateway's account named in msDS-AllowedToActOnBehalfOfOtherIdentity of
// the ASA, or of the server in single-server mode).
//
// A Roller keeps the ASA's password fresh from an MDM backend's replicas,
// claiming each roll in AD itself so that exactly one replica rolls.
//
// segkcd tests this package against a Samba AD DC and a WS-Management test
// host that models Exchange and IIS (winrs/winrstest); no real Exchange or
// IIS is reachable where segkcd is built.
package deploy
