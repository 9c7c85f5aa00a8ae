// Package seg is the mail gateway: an http.Handler that lets phones reach
// Exchange ActiveSync through Kerberos Constrained Delegation, as VMware
// Workspace ONE Secure Email Gateway does in its KCD mode.
//
// For each request ProxyHandler
//
//  1. accepts only the ActiveSync path and a well-formed EAS query, plain
//     or base64 (ParseParams);
//  2. authenticates the device: a TLS client certificate whose UPN names
//     the user (CertificateAuth, with CRL revocation of the whole chain),
//     or Basic, whose password the domain's KDC checks in an AS exchange
//     (BasicAuth, which remembers answers, right and wrong, under an HMAC
//     so that a phone with an old password cannot lock its user out);
//     either way the name is resolved to the account that holds it
//     (Names, Accounts);
//  3. checks that the EAS User parameter names that account, then asks the
//     Authorize hook (MDM policy);
//  4. gets a ticket as the user to Exchange's SPN from a kerberos.Cache
//     (S4U2Self, then S4U2Proxy; concurrent first requests share one
//     exchange);
//  5. forwards the request with a fresh "Authorization: Negotiate" header
//     over connections that carry this user only (UserPools), streaming
//     both ways, and retries once with a new ticket when Exchange refuses
//     a cached one.
//
// The shape follows httputil.ReverseProxy, which does the copying: one
// struct, plain fields with useful zero values, small hooks. It differs
// where the protocol demands. Transport is a UserTransport, not an
// http.RoundTripper, because IIS binds Kerberos authentication to the TCP
// connection: a connection that carried alice's ticket serves alice to any
// later request on it, so a shared pool would serve one user's mailbox to
// another (traefik #3792, haproxy #2985). With a RoundTripper field a
// caller could pass http.DefaultTransport and get exactly that bug; a
// UserTransport must say how it keeps users apart. Failures are *Error
// values that name the stage (request, authenticate, authorize, ticket,
// forward), carry the status the device got and unwrap to the cause
// (kerberos.ErrNotDelegable, ErrBadCredentials, ...); the device sees only
// the status, the log line says what an administrator should do (Hint).
//
// Identity: a UPN's prefix is not an account name in Active Directory (jdoe
// may hold j.doe@corp.example.com; alice@example.com may be xsmith's while
// another account is called alice), and two names that Go's Unicode tables
// upper-case alike may be two accounts (Samba keeps geoაx and geoᲐx apart).
// So the gateway never cuts a name and never folds one beyond ASCII letters:
// Names.Accounts asks the KDC which account holds each name a device presents
// (S4U2Self, then the PAC of the ticket, which the KDC signs), and that
// account's SID is the user everywhere after: the ticket cache
// (kerberos.Cache.AccountTicket, which checks the SID again in each new
// evidence ticket), the upstream pools, the held-poll bound, Basic's verdicts
// and rates, the redirects, the policy's lists (Policy resolves their names to
// SIDs) and the admin API. The ticket is for the account's sAMAccountName, so
// Exchange, which reads the PAC, and backends that read the name agree.
//
// Certificates are bound to their accounts strongly, as Windows DCs require
// since 2025 (KB5014754, CertificateAuth.Mapping): by default a device
// certificate must carry its account's SID (extension 1.3.6.1.4.1.311.25.2
// or the SAN URI tag:microsoft.com,2022-09-14:sid:<SID>) or match a strong
// altSecurityIdentities entry (CertificateAuth.Directory); a certificate
// carrying another account's SID is refused in every mode.
//
// Statuses: a malformed request 400, an unknown path 404; no or wrong
// Basic credentials 401, a refused certificate 403 (also one not strongly
// mapped to its account); a User parameter for
// someone else 403; a user the KDC will not delegate (sensitive, disabled,
// not allowed) 403; no KDC answer in time 503 with Retry-After; a login
// turned away by a bound before the KDC was asked (ErrNamesBusy,
// ErrPasswordsBusy, ErrSourceLimited) 503 with Retry-After; a body
// that stops coming 408; Exchange unreachable 502, too slow 504.
//
// The front door bounds what clients that have not authenticated can make
// the gateway and the KDC do: Basic login names not remembered are resolved
// within Accounts.MaxUnproven at a time and new passwords within
// BasicAuth.MaxPasswordChecks, gateway-wide; refused names are remembered
// apart from accounts (Accounts.MaxRefused); failed logins are limited per
// source (ProxyHandler.FailedLoginBurst, FailedLoginRate; the source from
// the PROXY protocol behind a balancer, ProxyProtocolListener), and each
// refusal is answered after FailedLoginDelay. Each write of an answer to a
// device is bounded (WriteTimeout), and dials to an Exchange host are
// bounded and paced after failures (UserPools.MaxDialsPerHost,
// DialBackoff).
//
// Every request logs one line (user, device, command, status, duration)
// through log/slog. No password, ticket, key or Authorization header
// reaches a log line or an error.
//
// Around the handler, each a part a caller can replace or leave out:
// Policy (the MDM device policy as the Authorize hook, fed by PolicyFile
// or PolicyHTTP), Upstreams with Redirects (451) and HealthCheck,
// Autodiscover (XML through KCD, v2 JSON answered by the gateway) and EWS
// routes, all three under the policy, Metrics on a caller's Prometheus registry,
// DebugDevices (per-device step logging), and Admin, the administration
// API for a listener of its own.
//
// Long polls: Ping and Sync may wait an hour at Exchange. The handler
// bounds only the wait for response headers (LongPollTimeout, 61 minutes by
// default), never the body; NewServer gives an http.Server without read or
// write timeouts that would cut them. A device that hangs up cancels its
// request to Exchange. On Linux a long poll that waits is parked: its
// device connection is taken from the http.Server, its two sockets wait on
// an epoll of the handler's own with no goroutine or buffer of its own,
// and the connection goes back to the server when the answer has gone and
// the device begins its next request (see
// the comment at the top of longpoll.go, and README's "Parked long polls").
package seg
