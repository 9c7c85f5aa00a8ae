// Package kerberos gets a service account tickets on behalf of users with
// Kerberos Constrained Delegation: S4U2Self for an evidence ticket from the
// user to the service, then S4U2Proxy to trade it for a ticket from the
// user to Exchange ([MS-SFU]).
//
// It is built on gokrb5 v8's exported types, because gokrb5 has no S4U and
// its client does not fit: it checksums a TGS-REQ body when the request is
// built (S4U2Proxy must add the evidence ticket first), insists that a
// reply's client name equal the request's (S4U replies name the user),
// caches service tickets by SPN alone (one user's ticket could reach
// another), and drops the KDC's error code. So this package builds its own
// TGS-REQs (PA-TGS-REQ with a checksum over the final body, PA-FOR-USER,
// additional tickets, PA-PAC-OPTIONS with the resource-based bit, so that
// S4U2Proxy works by classic delegation or by resource-based delegation
// alone), sends them through its own Transport
// (every KDC of the realm, UDP/TCP fallback, timeouts, contexts), and
// verifies replies itself (decryption, nonce, server and client names).
//
// Errors from the KDC are *KDCError values that keep the code and e-text;
// errors.Is matches them against ErrNotDelegable, ErrPolicy,
// ErrClientUnknown and the other sentinels. A non-forwardable evidence
// ticket still goes to the KDC (Windows accepts one for resource-based
// delegation); the refusal classic delegation gives it is reported as
// ErrEvidenceNotForwardable, carrying the *KDCError.
// No error or log holds a password, key or ticket.
//
// Identity is the account's SID, read from the PAC the KDC signs
// (Client.Account, Client.AccountIn), never a name: Cache.AccountTicket keeps
// tickets per SID and checks each new evidence ticket's PAC against it
// (ErrAccountChanged when a name has passed to another account).
//
// The service account needs TRUSTED_TO_AUTH_FOR_DELEGATION and the target
// SPNs in msDS-AllowedToDelegateTo (see package ad).
package kerberos
