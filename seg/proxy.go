package seg

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segkcd/segkcd/kerberos"
	"github.com/segkcd/segkcd/seg/internal/park"
)

// Tickets supplies Kerberos tickets from an account to an SPN and forgets
// one that Exchange refused. *kerberos.Cache is one. Tickets are the
// account's, keyed by its SID: the name in acct.User is only what the KDC is
// asked for, and a ticket must not come back when that name has passed to
// another account since it was resolved (kerberos.ErrAccountChanged).
type Tickets interface {
	AccountTicket(ctx context.Context, acct *kerberos.Account, spn string) (*kerberos.Ticket, error)
	InvalidateAccount(sid, spn string)
}

// Request is what the Authorize hook decides on.
type Request struct {
	Identity *Identity
	Params   Params
	HTTP     *http.Request
}

// ProxyHandler is the gateway: an http.Handler that authenticates the
// device (naming the account that holds the name it presents, see Names),
// checks that the EAS User parameter names that account, asks the
// Authorize hook, gets a ticket as the user to Exchange's SPN (S4U2Self and
// S4U2Proxy, through Tickets) and forwards the request to Exchange with a
// fresh "Authorization: Negotiate" header. Answers stream both ways as they
// come (httputil.ReverseProxy does the copying; a streamed answer is
// flushed write by write), so a Ping held for an hour or an attachment of
// any size passes without being buffered, and a device that hangs up
// cancels its request to Exchange. A long poll that waits is parked (on
// Linux, over HTTP/1.1, with UserPools): its connection is taken from the
// server and waits on the handler's poller without a goroutine, then goes
// back to the server it came from when the answer has gone.
//
// Upstream connections are never shared between users (see UserTransport).
//
// Only Upstreams, Tickets and Authenticate are required; the zero value of every
// other field means its default. Set the fields before the first request.
type ProxyHandler struct {
	// Upstreams are the Exchange servers (https://mail.corp.example.com,
	// with the SPN on the ASA). A user goes to the upstream a 451 mapped
	// them to (Redirects), else to the first healthy one. The request's
	// path and query are kept.
	Upstreams []*Upstream
	// Redirects remembers 451 answers per user (default: a Redirects of
	// its own; pass one to list and clear it through Admin).
	Redirects *Redirects
	// Autodiscover serves /Autodiscover/Autodiscover.xml through KCD, with
	// the MobileSync server URL in the answer replaced by the gateway's
	// (PublicURL), and answers Autodiscover v2
	// (/autodiscover/autodiscover.json, the JSON form Outlook mobile and
	// iOS Mail ask first) itself with the gateway's URLs, after the
	// device's authentication and the policy. Off by default.
	Autodiscover bool
	// EWS serves /EWS/ through KCD (the iis package configures its virtual
	// directory). Off by default.
	EWS bool
	// PublicURL is the gateway's URL as devices reach it, which replaces
	// Exchange's in X-MS-Location (451) and in Autodiscover answers.
	// Empty means https:// and the request's Host.
	PublicURL *url.URL
	// Tickets gets tickets as users (a *kerberos.Cache over a
	// *kerberos.Client).
	Tickets Tickets
	// Authenticate tells who the device is (CertificateAuth.Authenticate,
	// BasicAuth.Authenticate, AnyOf). Errors matching ErrNoCredentials or
	// ErrBadCredentials are answered 401 (Basic) or 403 (certificate).
	Authenticate func(*http.Request) (*Identity, error)
	// Names maps names to accounts: the EAS User parameter's, which must
	// name the authenticated user (UPN, DOMAIN\user or bare name, compared
	// as AD compares names), and, for the authenticators whose own Names
	// is the zero value (CertificateAuth, BasicAuth), the device's.
	Names Names
	// Authorize, when set, decides on each authenticated request (MDM
	// policy): ActiveSync, Autodiscover and EWS alike, since all three reach
	// the mailbox (Autodiscover and EWS carry no device id). An error
	// refuses it with 403, or with the Status of an *Error it returns.
	Authorize func(ctx context.Context, r *Request) error
	// Transport gives each user's upstream connections (default: UserPools
	// with system TLS roots).
	Transport UserTransport
	// UnboundTokens sends Negotiate tokens without channel bindings. By
	// default each token is bound to the TLS connection it goes on (RFC
	// 5929 tls-server-end-point of the certificate Exchange showed on it,
	// in the authenticator checksum, with KERB_AP_OPTIONS_CBT), as Windows
	// clients bind: Exchange 2019 CU14 and later turn Extended Protection
	// on, and with tokenChecking Require, IIS refuses a token without. Set
	// it only for a TLS-inspecting device between the gateway and Exchange,
	// whose certificate is not the one Exchange checks against. Bindings
	// need the default Transport (UserPools), which makes the header on
	// the connection; another UserTransport gets unbound tokens.
	UnboundTokens bool
	// Timeout bounds the wait for Exchange's response headers (default 2m).
	Timeout time.Duration
	// LongPollTimeout replaces Timeout for Ping and Sync, which Exchange may
	// hold for up to 3540s (default 3660s).
	LongPollTimeout time.Duration
	// TicketTimeout bounds getting a ticket, and authenticating the device
	// (naming its account, checking a Basic password); when the KDC does
	// not answer within it the device gets 503 with Retry-After (default
	// 15s).
	TicketTimeout time.Duration
	// ReplayLimit: request bodies of known length up to this size are read
	// before forwarding, so that the request can be sent again with a new
	// ticket when Exchange refuses a cached one. Larger and chunked bodies
	// stream and cannot be (default 64 KiB).
	ReplayLimit int64
	// ModifyResponse, when set, can change Exchange's response.
	ModifyResponse func(*http.Response) error
	// ErrorHandler answers failures; err is an *Error. The default writes
	// Error.Status with the status text only (never internals), a Basic
	// challenge with 401 and Retry-After with 503.
	ErrorHandler func(w http.ResponseWriter, r *http.Request, err error)
	// BasicRealm is the realm of the Basic challenge (default "ActiveSync").
	BasicRealm string
	// Logger receives one line per request and the reasons of failures
	// (default slog.Default()).
	Logger *slog.Logger
	// Metrics, when set, counts requests by command and status, times them
	// and gauges the long polls held open.
	Metrics *Metrics
	// Debug, when set, lists devices whose requests are logged step by
	// step (authentication, policy, ticket, Exchange's answer).
	Debug *DebugDevices
	// BodyTimeout bounds the wait for each next part of a device's request
	// body once the request is authenticated (default 60s): a device that
	// stops sending half-way gets 408 and frees its connection. A body of
	// any size passes as long as it keeps coming. A request refused before
	// its body was read (no credentials, the policy) gets its answer once
	// the rest of its body has come, or after BodyTimeout, when the
	// connection is closed.
	BodyTimeout time.Duration
	// MaxLongPollsPerUser bounds the Ping and Sync requests one user holds
	// open (default 32, UserPools' default connections per user: more
	// could only queue for one). Past it the user's oldest is ended. A new
	// Ping from a device that already holds one ends the older (a phone
	// that lost its connection asks again; the newer wins, as at
	// Exchange). An ended long poll gets 503 with Retry-After.
	MaxLongPollsPerUser int
	// WriteTimeout bounds each write of an answer to the device (default
	// 60s): a device that stops reading its answer, whose TCP window stays
	// shut, has its connection closed after it, and the answer's Exchange
	// connection with it. An answer of any size passes as long as the
	// device keeps reading. It replaces http.Server.WriteTimeout, which
	// bounds a whole answer and so cannot be set with hour-long polls.
	WriteTimeout time.Duration
	// FailedLoginBurst is how many failed logins (credentials refused, a
	// login name no account holds) one source may have before the gateway
	// stops asking the KDC about its logins (default 20; negative: no
	// limit). The source is an IPv4 address or an IPv6 /64, as the
	// request's RemoteAddr gives it: behind a load balancer, take the
	// client's address from the PROXY protocol (ProxyProtocolListener),
	// since the TLS of client certificates must pass through the balancer
	// untouched and no HTTP header can carry it. A source past its limit
	// still gets in where the KDC need not be asked (a password checked
	// right within BasicAuth.TTL, a certificate); a name not remembered or
	// a new password is refused (ErrSourceLimited, 503 with Retry-After).
	FailedLoginBurst int
	// FailedLoginRate is how many failed logins per second a source gets
	// back once its burst is spent (default 0.1: one every 10s).
	FailedLoginRate float64
	// FailedLoginDelay is how long a refused login waits for its answer
	// (default 1s; negative: none): credentials refused, logins turned
	// away by a bound (ErrNamesBusy, ErrPasswordsBusy, ErrSourceLimited),
	// and requests no device sends (an unknown path, a malformed ActiveSync
	// query), whose connection is closed after the answer.
	// A request without credentials (the challenge a device asks for) is
	// answered at once. The wait costs a timer and a parked goroutine; an
	// attacker's loop on one connection is slowed to one refusal per
	// FailedLoginDelay, where without it a few hundred connections drew
	// tens of thousands of refusals a second from the real users' cores.
	FailedLoginDelay time.Duration
	// MaxSources bounds the sources whose failed logins are counted
	// (default 100000); past it the least spent are forgotten first.
	MaxSources int

	once        sync.Once
	failed      *failedLogins // nil: no limit
	hashKey     []byte        // for refused login names in the log
	polls       heldPolls
	buffers     bufferPool             // copy buffers of ordinary answers
	longBuffers bufferPool             // of long polls
	proxy       *httputil.ReverseProxy // ordinary commands
	longPoll    *httputil.ReverseProxy // Ping and Sync
	transport   UserTransport
	redirects   *Redirects
	initErr     error
	poller      park.Poller // parked long polls, resting connections
	serversMu   sync.Mutex
	servers     map[*http.Server]*park.Listener // that long polls were taken from
	parkMu      sync.Mutex
	live        map[taken]struct{} // taken from their servers, not ended
	liveGone    chan struct{}      // closed when live empties
	closing     bool               // Shutdown runs
}

// easPath is the ActiveSync virtual directory.
const easPath = "/Microsoft-Server-ActiveSync"

type ctxKey struct{}

// forward is the state of one request that the RoundTripper needs.
type forward struct {
	user     string // the account's name, for the log and errors
	sid      string // the account's SID: the key of everything per user
	name     string // what the device presented (Identity.Name)
	account  *kerberos.Account
	upstream *Upstream
	host     string // the Host the device asked for, for rewritten locations
	route    string
	ticket   *kerberos.Ticket
	// onConn: the transport makes the Negotiate header on the connection
	// (UserPools, authorizeOnConn), bound unless unbound; otherwise the
	// header is made before the request goes, unbound.
	onConn, unbound bool
	body            []byte        // the whole body when it can be sent again
	body0           *deadlineBody // the device's body, nil when it sent none
	replay          bool
	timeout         time.Duration
	err             *Error   // set by the RoundTripper for the ErrorHandler
	line            *logLine // for per-device debug lines
	// ctx is the request's context as the handler made it. Upstream
	// requests take theirs from it, not from ReverseProxy's outgoing
	// request, whose context holds an httptrace that refers to the
	// device's ResponseWriter: a parked poll's upstream connection would
	// keep the server's connection and its buffers alive through it.
	ctx context.Context
}

func (h *ProxyHandler) init() {
	if len(h.Upstreams) == 0 || h.Tickets == nil || h.Authenticate == nil {
		h.initErr = errors.New("seg: ProxyHandler needs Upstreams, Tickets and Authenticate")
		return
	}
	for _, u := range h.Upstreams {
		if u == nil || u.URL == nil || u.URL.Host == "" {
			h.initErr = errors.New("seg: an upstream without a URL")
			return
		}
	}
	h.hashKey = make([]byte, 32)
	if _, err := rand.Read(h.hashKey); err != nil {
		h.initErr = fmt.Errorf("seg: no randomness: %w", err)
		return
	}
	h.redirects = h.Redirects
	if h.redirects == nil {
		h.redirects = &Redirects{}
	}
	h.transport = h.Transport
	if h.transport == nil {
		h.transport = &UserPools{}
	}
	if h.FailedLoginBurst >= 0 {
		h.failed = &failedLogins{burst: float64(positiveOr(h.FailedLoginBurst, 20)),
			rate: positiveOr(h.FailedLoginRate, 0.1), max: positiveOr(h.MaxSources, 100000)}
	}
	// Answers are copied as they come and flushed at their end; one of
	// unknown length (streamed, chunked) is flushed write by write
	// (ReverseProxy does that itself), so nothing is held back. A long
	// poll's answer comes whole when Exchange has something to say, so it
	// needs no more: flushing every write of every long poll's answer cost
	// a TLS record and a system call per write (0.86x ReverseProxy's
	// throughput on Syncs, 1.01x on FolderSyncs).
	//
	// The two copies differ in their buffers. A long poll's is small: the
	// copy holds it for as long as the answer is open, an hour for a Ping
	// whose answer has begun, and a Ping's or Sync's answer is a few KiB at
	// most. 32 KiB for each of 50,000 held Pings would be 1.6 GiB.
	h.buffers.size, h.longBuffers.size = 32<<10, 4<<10
	h.proxy = h.reverseProxy(&h.buffers)
	h.longPoll = h.reverseProxy(&h.longBuffers)
}

func (h *ProxyHandler) reverseProxy(buffers *bufferPool) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:        rewrite,
		Transport:      &kcdTransport{h: h},
		BufferPool:     buffers,
		ModifyResponse: h.modifyResponse,
		ErrorHandler:   h.proxyError,
		ErrorLog:       slog.NewLogLogger(h.logger().Handler(), slog.LevelWarn),
	}
}

func (h *ProxyHandler) logger() *slog.Logger { return logOr(h.Logger) }

// ServeHTTP implements http.Handler.
func (h *ProxyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.once.Do(h.init)
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, rc: http.NewResponseController(w), writeTimeout: h.writeTimeout()}
	// The deadline the last answer on this connection left (the server
	// sets none of its own without WriteTimeout) must not fail this one.
	if sw.rc.SetWriteDeadline(time.Time{}) != nil {
		sw.rc = nil
	}
	line := &logLine{}
	// A long poll taken from the server is logged and ended by the
	// goroutine that finishes it; its connection is no longer the server's.
	var taken bool
	defer func() {
		if !taken {
			h.log(r, sw, line, start)
			h.boundRest(w, r)
		}
	}()
	if h.initErr != nil {
		h.fail(sw, r, line, &Error{Stage: StageRequest, Status: http.StatusInternalServerError, Err: h.initErr})
		return
	}
	line.route = h.route(r.URL.Path)
	if line.route == "" {
		h.fail(sw, r, line, &Error{Stage: StageRequest, Err: errNotFound})
		return
	}
	switch r.Method {
	case http.MethodPost, http.MethodOptions, http.MethodGet:
	default:
		h.fail(sw, r, line, &Error{Stage: StageRequest, Err: errMethod})
		return
	}
	var params Params
	if line.route == routeEAS {
		var err error
		params, err = ParseParams(r)
		if err == nil && r.Method == http.MethodPost && params.Cmd == "" {
			err = errorf("%w: POST without Cmd", ErrBadParams)
		}
		if err != nil {
			h.fail(sw, r, line, &Error{Stage: StageRequest, Err: err})
			return
		}
	}
	var adq autodiscoverJSONRequest
	if line.route == routeAutodiscover2 {
		var err error
		if adq, err = parseAutodiscoverJSON(r); err != nil {
			h.fail(sw, r, line, &Error{Stage: StageRequest, Status: http.StatusBadRequest, Err: err})
			return
		}
	}
	line.params = params
	line.debug = h.Debug.Has(params.DeviceID)
	h.debugf(line, "request", slog.String("cmd", params.Cmd), slog.String("version", params.ProtocolVersion),
		slog.String("user_agent", printable(r.UserAgent())), slog.Bool("base64_query", params.Base64))

	// Naming the account and checking a password ask the KDC too: bounded
	// as a ticket is.
	// The source's record rides in the context of everything the device's
	// words make the gateway ask: its credentials, and the User parameter.
	sctx := r.Context()
	src, limited := source(r.RemoteAddr)
	limited = limited && h.failed != nil
	if limited {
		if st := h.failed.state(src, start); st != sourceClean {
			sctx = context.WithValue(sctx, sourceKey{}, st)
		}
	}
	actx, cancel := context.WithTimeout(context.WithValue(sctx, namesKey{}, &h.Names), h.ticketTimeout())
	id, err := h.Authenticate(r.WithContext(actx))
	cancel()
	if limited && err != nil && countsAgainstSource(err) {
		h.failed.failed(src, time.Now())
	}
	if err == nil && (id == nil || id.User == "") {
		err = errorf("%w: the authenticator named no user", ErrBadCredentials)
	}
	if err == nil && id.SID == "" {
		// Every piece of per-user state is keyed by the account's SID; an
		// identity without one could only be keyed by a name.
		h.fail(sw, r, line, &Error{Stage: StageAuthenticate, Status: http.StatusInternalServerError, User: id.User, Err: errNoSID})
		return
	}
	if err != nil {
		// Who tried: the account, or a certificate's name (an administrator
		// reading about refused logins needs it); for a Basic name that is
		// no account only a keyed hash of what was typed, since people type
		// passwords in the name field.
		var le *loginError
		if errors.As(err, &le) {
			line.login = le.who
		} else if name, _, ok := r.BasicAuth(); ok {
			line.loginHash = h.nameHash(name)
		}
		if countsAgainstSource(err) || busy(err) {
			// A refused login is answered late: a client that loops on
			// refusals (guessing, flooding names) gets one answer per
			// FailedLoginDelay per connection, not thousands a second
			// of the cores the real users need.
			h.delayRefusal()
		}
		h.fail(sw, r, line, &Error{Stage: StageAuthenticate, Err: err})
		return
	}
	line.user = id.User
	h.debugf(line, "authenticated", slog.String("method", id.Method), slog.String("name", printable(id.Name)))
	line.sid = id.SID
	if params.User != "" {
		if same, err := h.sameUser(sctx, params.User, id); err != nil {
			h.fail(sw, r, line, &Error{Stage: StageAuthorize, Status: http.StatusServiceUnavailable, User: id.User, Err: err})
			return
		} else if !same {
			// A name the device chose, that is not its own: counted and
			// answered late as a refused login is, or one valid login would
			// let a device spend the name budget at will.
			if limited {
				h.failed.failed(src, time.Now())
			}
			h.delayRefusal()
			h.fail(sw, r, line, &Error{Stage: StageAuthorize, User: id.User, Err: errUserMismatch})
			return
		}
	}
	// Autodiscover and EWS go through the policy too: they reach the same
	// mailbox, and a device the policy blocks must not read it through EWS.
	// They carry no device id, so rules that need a known device
	// (require_managed, ...) refuse them unless an allow list names the
	// user or the client's User-Agent.
	if h.Authorize != nil {
		if err := h.Authorize(r.Context(), &Request{Identity: id, Params: params, HTTP: r}); err != nil {
			h.fail(sw, r, line, &Error{Stage: StageAuthorize, User: id.User, Err: err})
			return
		}
	}

	h.debugf(line, "authorized")
	if line.route == routeAutodiscover2 {
		h.autodiscoverJSON(sw, r, line, adq)
		return
	}
	up := h.upstreamFor(id.SID)
	ticketStart := time.Now()
	acct := id.account()
	t, err := h.ticket(r.Context(), acct, up.TicketSPN())
	h.accountChanged(r.Context(), err, id.Name)
	if err != nil {
		h.fail(sw, r, line, &Error{Stage: StageTicket, User: id.User, Err: err})
		return
	}
	h.debugf(line, "ticket", slog.Duration("took", time.Since(ticketStart)), slog.String("spn", up.TicketSPN()),
		slog.Time("ticket_end", t.EndTime))

	_, onConn := h.transport.(*UserPools)
	fw := &forward{user: id.User, sid: id.SID, name: id.Name, account: acct, upstream: up, host: r.Host, ticket: t,
		onConn: onConn, unbound: h.UnboundTokens || !onConn, timeout: h.timeoutFor(params), route: line.route, line: line}
	if r.Body != nil && r.Body != http.NoBody {
		body := &deadlineBody{ReadCloser: r.Body, rc: http.NewResponseController(w), d: h.bodyTimeout()}
		defer func() {
			if !taken {
				body.clear()
			}
		}()
		r.Body, fw.body0 = body, body
	}
	if line.route == routeAutodiscover {
		// The answer is rewritten, so it must come uncompressed.
		r.Header.Del("Accept-Encoding")
	}
	switch {
	case r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody:
		fw.replay = true
	case r.ContentLength > 0 && r.ContentLength <= h.replayLimit():
		b := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			status := http.StatusBadRequest
			if fw.body0.timedOut.Load() {
				status, err = http.StatusRequestTimeout, errBodyTimeout
			}
			h.fail(sw, r, line, &Error{Stage: StageRequest, Status: status, User: id.User,
				Err: fmt.Errorf("reading the request body: %w", err)})
			return
		}
		fw.body, fw.replay = b, true
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	line.fw = fw
	if !params.LongPoll() {
		fw.ctx = context.WithValue(r.Context(), ctxKey{}, fw)
		h.proxy.ServeHTTP(sw, r.WithContext(fw.ctx))
		return
	}
	taken = h.serveLongPoll(w, sw, r, line, start, fw, params)
}

// sameUser reports whether the EAS User parameter names the authenticated
// account: the very name the device authenticated with, one of the
// account's own names as the PAC spells them (its sAMAccountName, its
// explicit UPN: an implicit one may be another account's explicit UPN) with
// at most ASCII letters in another case, or a name that the directory
// resolves to the same SID (Names.Accounts, which remembers). Names are
// never compared through Go's Unicode tables: two names that they join may
// be two accounts in AD.
//
// A name resolved here is one the device chose, so it is resolved within
// Accounts.MaxUnproven as a Basic login name is: an authenticated device
// that names a new account in each request costs the KDC no more than an
// unauthenticated one. When the bound is reached, err is ErrNamesBusy.
func (h *ProxyHandler) sameUser(ctx context.Context, param string, id *Identity) (bool, error) {
	if param == id.Name {
		return true, nil
	}
	if p, err := h.Names.Principal(param); err == nil {
		// AD folds ASCII letters in both names (foldASCII), so these
		// name this account and no other.
		if strings.Contains(p, "@") && id.UPN != "" && !id.ImplicitUPN && equalASCII(p, id.UPN) || !strings.Contains(p, "@") && equalASCII(p, id.User) {
			return true, nil
		}
	}
	acct, err := h.Names.resolveUnproven(ctx, param)
	if busy(err) {
		return false, err
	}
	return err == nil && acct.SID != "" && acct.SID == id.SID, nil
}

// accountChanged asks the directory again about the name a device presented
// when the KDC's ticket for the account it was resolved to says the name now
// belongs to someone else (kerberos.ErrAccountChanged): the request fails
// (503, the device retries), and every later one gets the name's new holder.
func (h *ProxyHandler) accountChanged(ctx context.Context, err error, name string) {
	if errors.Is(err, kerberos.ErrAccountChanged) {
		h.Names.Refresh(ctx, name)
	}
}

// upstreamFor chooses the account's upstream: the one a 451 named, else
// the first healthy one, else the first.
func (h *ProxyHandler) upstreamFor(sid string) *Upstream {
	if u := h.redirects.Get(sid); u != nil {
		return u
	}
	for _, u := range h.Upstreams {
		if ok, _ := u.Healthy(); ok {
			return u
		}
	}
	return h.Upstreams[0]
}

// publicBase is the gateway's base URL for rewritten locations (451,
// Autodiscover): PublicURL, else the Host the device used.
func (h *ProxyHandler) publicBase(host string) string {
	if h.PublicURL != nil {
		return strings.TrimSuffix(h.PublicURL.String(), "/")
	}
	return "https://" + host
}

// modifyResponse handles 451 (remember the user's server, point the device
// at the gateway again), then calls the caller's ModifyResponse.
func (h *ProxyHandler) modifyResponse(resp *http.Response) error {
	fw := resp.Request.Context().Value(ctxKey{}).(*forward)
	// Exchange's side of the Negotiate exchange is the gateway's, not the
	// device's: a mutual-authentication token (an AP-REP for the user's
	// ticket) or a challenge would only tell the device about the
	// gateway's Kerberos, and Persistent-Auth about Exchange's connection.
	resp.Header.Del("WWW-Authenticate")
	resp.Header.Del("Persistent-Auth")
	if resp.StatusCode == 451 {
		loc, err := url.Parse(resp.Header.Get("X-MS-Location"))
		var to *Upstream
		if err == nil {
			for _, u := range h.Upstreams {
				if equalASCII(u.URL.Scheme, loc.Scheme) && equalASCII(u.URL.Host, loc.Host) {
					to = u
				}
			}
		}
		if to == nil {
			return &Error{Stage: StageForward, Status: http.StatusBadGateway, User: fw.user, Err: errUnknownRedirect}
		}
		h.redirects.Set(fw.sid, fw.user, to)
		h.Metrics.redirected()
		rewritten := h.publicBase(fw.host) + loc.EscapedPath()
		if loc.RawQuery != "" {
			rewritten += "?" + loc.RawQuery
		}
		resp.Header.Set("X-MS-Location", rewritten)
		h.logger().LogAttrs(resp.Request.Context(), slog.LevelInfo, "mailbox elsewhere: user redirected",
			slog.String("user", fw.user), slog.String("upstream", to.URL.Host))
	}
	if fw.route == routeAutodiscover && resp.StatusCode == http.StatusOK {
		if err := rewriteAutodiscover(resp, h.publicBase(fw.host)+easPath); err != nil {
			return &Error{Stage: StageForward, Status: http.StatusBadGateway, User: fw.user, Err: err}
		}
	}
	if h.ModifyResponse != nil {
		return h.callModifyResponse(resp)
	}
	return nil
}

// callModifyResponse runs the caller's hook; a panic in it is its error
// (502), not the handler's: a panic would skip the closing of the answer,
// and the user's connection would stay taken.
func (h *ProxyHandler) callModifyResponse(resp *http.Response) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("ModifyResponse panicked: %v", v)
		}
	}()
	return h.ModifyResponse(resp)
}

func (h *ProxyHandler) ticketTimeout() time.Duration {
	return positiveOr(h.TicketTimeout, 15*time.Second)
}

func (h *ProxyHandler) ticket(ctx context.Context, acct *kerberos.Account, spn string) (*kerberos.Ticket, error) {
	ctx, cancel := context.WithTimeout(ctx, h.ticketTimeout())
	defer cancel()
	return h.Tickets.AccountTicket(ctx, acct, spn)
}

func (h *ProxyHandler) timeoutFor(p Params) time.Duration {
	if p.LongPoll() {
		if h.LongPollTimeout > 0 {
			return h.LongPollTimeout
		}
		return 3660 * time.Second
	}
	if h.Timeout > 0 {
		return h.Timeout
	}
	return 2 * time.Minute
}

func (h *ProxyHandler) bodyTimeout() time.Duration { return positiveOr(h.BodyTimeout, time.Minute) }

// delayRefusal waits FailedLoginDelay, whatever the device does: a client
// that half-closes its connection after its request ends the request's
// context at once, and would otherwise have its refusals at full speed.
func (h *ProxyHandler) delayRefusal() {
	d := h.FailedLoginDelay
	if d < 0 {
		return
	}
	if d == 0 {
		d = time.Second
	}
	time.Sleep(d)
}

func (h *ProxyHandler) writeTimeout() time.Duration { return positiveOr(h.WriteTimeout, time.Minute) }

func (h *ProxyHandler) maxLongPolls() int { return positiveOr(h.MaxLongPollsPerUser, 32) }

// nameHash is a keyed hash of a refused login name: one name gives one hash
// for the life of the handler, so an administrator sees a name tried many
// times, and nothing in the log reads back into what was typed.
func (h *ProxyHandler) nameHash(name string) string {
	m := hmac.New(sha256.New, h.hashKey)
	m.Write([]byte(name))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

func (h *ProxyHandler) replayLimit() int64 { return positiveOr(h.ReplayLimit, 64<<10) }

// Routes: what a request is for.
const (
	routeEAS           = "activesync"
	routeAutodiscover  = "autodiscover"
	routeAutodiscover2 = "autodiscover_v2" // the JSON form, answered by the gateway
	routeEWS           = "ews"
)

// route names the request's route, or "" for a path the gateway does not
// serve.
func (h *ProxyHandler) route(p string) string {
	switch {
	case isEASPath(p):
		return routeEAS
	case h.Autodiscover && equalASCII(p, "/Autodiscover/Autodiscover.xml"):
		return routeAutodiscover
	case h.Autodiscover && isAutodiscoverJSONPath(p):
		return routeAutodiscover2
	case h.EWS && len(p) > 5 && equalASCII(p[:5], "/EWS/") && path.Clean(p) == p:
		return routeEWS
	}
	return ""
}

// isEASPath accepts the ActiveSync directory and paths below it, in clean
// form only: "/Microsoft-Server-ActiveSync/../owa" would reach another
// application of Exchange's.
func isEASPath(p string) bool {
	if path.Clean(p) != p && path.Clean(p)+"/" != p {
		return false
	}
	if len(p) < len(easPath) || !equalASCII(p[:len(easPath)], easPath) {
		return false
	}
	return len(p) == len(easPath) || p[len(easPath)] == '/'
}

// proxyError is the ReverseProxy's ErrorHandler: the RoundTripper failed.
func (h *ProxyHandler) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	fw, _ := r.Context().Value(ctxKey{}).(*forward)
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Stage: StageForward, Err: err}
		if fw != nil {
			e.User = fw.user
		}
		switch cause := context.Cause(r.Context()); {
		case fw != nil && fw.body0 != nil && fw.body0.stalled():
			e.Stage, e.Status, e.Err = StageRequest, http.StatusRequestTimeout, errBodyTimeout
		case errors.Is(cause, errLongPollEnded), errors.Is(cause, errShuttingDown):
			e.Status, e.Err = http.StatusServiceUnavailable, cause
		}
	}
	sw, _ := w.(*statusWriter)
	if sw == nil {
		sw = &statusWriter{ResponseWriter: w}
	}
	if fw != nil {
		fw.err = e
	}
	h.answer(sw, r, e)
}

// fail answers a failure found before forwarding. A request the gateway
// cannot serve at all (an unknown path or method, a malformed ActiveSync
// request: no device sends one) is answered after FailedLoginDelay, and
// its connection closed: a client that pipelines hundreds of them on one
// connection gets one answer per FailedLoginDelay and must then pay for a
// new connection, where each used to cost a log line and the real users'
// cores.
func (h *ProxyHandler) fail(w *statusWriter, r *http.Request, line *logLine, e *Error) {
	line.err = e
	if e.Stage == StageRequest && e.Status != http.StatusInternalServerError && e.Status != http.StatusRequestTimeout {
		w.Header().Set("Connection", "close")
		h.delayRefusal()
	}
	h.answer(w, r, e)
}

func (h *ProxyHandler) answer(w *statusWriter, r *http.Request, e *Error) {
	if e.Status == 0 {
		_, _, basic := r.BasicAuth()
		e.Status = statusFor(e.Stage, e.Err, basic)
	}
	if h.ErrorHandler != nil {
		h.ErrorHandler(w, r, e)
		return
	}
	hdr := w.Header()
	switch e.Status {
	case http.StatusUnauthorized:
		realm := h.BasicRealm
		if realm == "" {
			realm = "ActiveSync"
		}
		hdr.Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q, charset=\"UTF-8\"", realm))
	case http.StatusServiceUnavailable:
		hdr.Set("Retry-After", retryAfter(e.Err))
	}
	hdr.Set("Content-Type", "text/plain; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	w.WriteHeader(e.Status)
	io.WriteString(w, statusText(e.Status)+"\n")
}

func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return t
	}
	return "Error"
}

// bufferPool lends ReverseProxy its copy buffers: without one it allocates
// 32 KiB per response, most of the gateway's garbage.
type bufferPool struct {
	p    sync.Pool
	size int
}

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, b.size)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }

// logLine collects what the request's log line says.
type logLine struct {
	route string
	user  string
	sid   string // the account's SID: the identity, where user is its name
	login string // the account of a refused Basic login
	// loginHash stands for a refused Basic name that is no account.
	loginHash string
	params    Params
	fw        *forward
	err       *Error
	debug     bool            // the device is on the Debug list
	poll      context.Context // a long poll's context, to tell why it ended
	// parked: the long poll's connection was taken from the server, whose
	// request context has ended; deviceGone says the device hung up.
	parked, deviceGone bool
}

func (h *ProxyHandler) log(r *http.Request, w *statusWriter, line *logLine, start time.Time) {
	err := line.err
	if err == nil && line.fw != nil {
		err = line.fw.err
	}
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	if err != nil && w.status == 0 {
		status = err.Status
	}
	if err == nil && line.poll != nil {
		// Ended after its answer had begun: the copy was cut, no error
		// answer could be sent, and the log still says why.
		if cause := context.Cause(line.poll); errors.Is(cause, errLongPollEnded) || errors.Is(cause, errShuttingDown) {
			err = &Error{Stage: StageForward, Status: status, User: line.user, Err: cause}
		}
	}
	attrs := []slog.Attr{
		slog.String("user", line.user),
		slog.String("sid", line.sid),
		slog.String("device", line.params.DeviceID),
		slog.String("device_type", line.params.DeviceType),
		slog.String("cmd", line.params.Cmd),
		slog.String("route", line.route),
		slog.String("method", r.Method),
		slog.Int("status", status),
		slog.Duration("duration", time.Since(start)),
		slog.String("remote", r.RemoteAddr),
	}
	if line.login != "" {
		attrs = append(attrs, slog.String("login", line.login))
	}
	if line.loginHash != "" {
		attrs = append(attrs, slog.String("login_hash", line.loginHash))
	}
	if err == nil && (line.deviceGone || !line.parked && r.Context().Err() != nil) {
		// The device hung up while its answer was on its way (a phone
		// giving up a held Ping): the status is what had been sent, and
		// an operator must tell this from an answer that ended.
		attrs = append(attrs, slog.String("ended", "device closed the connection"))
	}
	route := line.route
	if route == "" {
		route = "unknown"
	}
	h.Metrics.request(route, line.params.Cmd, status, time.Since(start))
	h.debugf(line, "answered", slog.Int("status", status), slog.Duration("duration", time.Since(start)))
	level := slog.LevelInfo
	if err != nil {
		attrs = append(attrs, slog.String("stage", string(err.Stage)), slog.String("error", err.Error()))
		if hint := err.Hint(); hint != "" {
			attrs = append(attrs, slog.String("hint", hint))
		}
		if status >= 500 || err.Stage == StageTicket {
			level = slog.LevelWarn
		}
	}
	h.logger().LogAttrs(context.Background(), level, "activesync", attrs...)
}

// statusWriter remembers the status; Unwrap lets http.ResponseController
// (which ReverseProxy flushes through) reach the server's writer.
type statusWriter struct {
	http.ResponseWriter
	status  int
	written int64 // body bytes
	// rc and writeTimeout, when set, bound each write to the device: one
	// that stops reading its answer fails the write after writeTimeout
	// instead of holding the copy, its buffers and its Exchange
	// connection for good.
	rc           *http.ResponseController
	writeTimeout time.Duration
}

// deadline sets the device's write deadline writeTimeout from now.
func (w *statusWriter) deadline() {
	if w.rc != nil && w.rc.SetWriteDeadline(time.Now().Add(w.writeTimeout)) != nil {
		w.rc = nil // not supported: nothing to bound
	}
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.deadline()
	n, err := w.ResponseWriter.Write(b)
	w.written += int64(n)
	return n, err
}

func (w *statusWriter) Flush() {
	w.deadline()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// kcdTransport sends each upstream request over its user's connections with
// a fresh Negotiate header, and retries once with a new ticket when
// Exchange refuses a cached one.
type kcdTransport struct{ h *ProxyHandler }

func (k *kcdTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	fw, ok := req.Context().Value(ctxKey{}).(*forward)
	if !ok {
		return nil, errors.New("upstream request without its user")
	}
	rt := k.h.transport.ForUser(fw.sid)
	if fw.body != nil {
		// A kept-alive connection that the server closed is found only by
		// sending on it: the body can go again on a new one.
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(fw.body)), nil }
	}
	for again := false; ; again = true {
		resp, err := k.attempt(rt, req, fw)
		if err != nil || resp.StatusCode != http.StatusUnauthorized {
			forget(req, fw)
			return resp, err
		}
		// Exchange refused the ticket: the ASA's key changed since it was
		// issued (a roll), or the ticket was revoked.
		drain(resp)
		if err := k.h.renewTicket(req.Context(), fw, again); err != nil {
			return nil, err
		}
		req = req.Clone(req.Context())
		if fw.body != nil {
			req.Body = io.NopCloser(bytes.NewReader(fw.body))
		}
	}
}

// renewTicket forgets the ticket Exchange refused and gets a new one for the
// request to go once more. A second refusal (again), or a body that streamed
// and cannot go again, ends the request (502).
func (h *ProxyHandler) renewTicket(ctx context.Context, fw *forward, again bool) error {
	h.Tickets.InvalidateAccount(fw.sid, fw.upstream.TicketSPN())
	if again {
		err := errTicketRefused
		if fw.unbound {
			err = errUnboundTokenRefused
		}
		return &Error{Stage: StageForward, Status: http.StatusBadGateway, User: fw.user, Err: err}
	}
	if !fw.replay {
		return &Error{Stage: StageForward, Status: http.StatusBadGateway, User: fw.user, Err: errNoReplay}
	}
	t, err := h.ticket(ctx, fw.account, fw.upstream.TicketSPN())
	h.accountChanged(ctx, err, fw.name)
	if err != nil {
		return &Error{Stage: StageTicket, User: fw.user, Err: err}
	}
	fw.ticket = t
	return nil
}

// attempt sends req once with a new authenticator, bounding the wait for
// response headers (not the body: a long poll's answer may stream for long).
func (k *kcdTransport) attempt(rt http.RoundTripper, req *http.Request, fw *forward) (*http.Response, error) {
	if err := setNegotiate(req, fw); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(fw.ctx)
	var timedOut atomic.Bool
	timer := time.AfterFunc(fw.timeout, func() { timedOut.Store(true); cancel() })
	debug := fw.line != nil && fw.line.debug // the warm path pays no clock read
	var sent time.Time
	if debug {
		sent = time.Now()
	}
	resp, err := rt.RoundTrip(req.WithContext(ctx))
	timer.Stop()
	if debug {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		k.h.debugf(fw.line, "upstream answered", slog.Duration("took", time.Since(sent)), slog.Int("status", status))
	}
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			fw.upstream.setHealth(err) // skipped for new users until a probe succeeds
		}
		cancel()
		if timedOut.Load() {
			return nil, errUpstreamTime
		}
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// forget drops the Negotiate header from a request that went whole: the
// answer keeps its request (a chunked body refers to it for trailers) for
// as long as a long poll's answer is open, and a ModifyResponse hook has no
// use for the ticket. A body still streaming may still be written beside
// this, and keeps it.
func forget(req *http.Request, fw *forward) {
	if fw.replay {
		req.Header.Del("Authorization")
	}
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// drain reads a little of a refused response so the connection can be
// reused, and closes it.
func drain(resp *http.Response) {
	io.CopyN(io.Discard, resp.Body, 4<<10)
	resp.Body.Close()
}

// boundRest runs when the handler is done: before it answers, the server
// reads what is left of a request body (to keep the connection), with no
// deadline of its own. Bounded by BodyTimeout, as every read of the body
// is: else a device that stops sending after its headers would hold its
// connection and never get its answer, however early it was refused (no
// credentials, a blocked device), before the body was ever read. A body
// that timed out keeps its deadline in the past; one read to its end is
// not read again; and the server lifts the deadline before the next
// request on the connection.
func (h *ProxyHandler) boundRest(w http.ResponseWriter, r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return
	}
	if b, ok := r.Body.(*deadlineBody); ok && b.timedOut.Load() {
		return
	}
	http.NewResponseController(w).SetReadDeadline(time.Now().Add(h.bodyTimeout()))
}

// deadlineBody gives each read of a device's request body BodyTimeout: the
// server has no read timeout (an upload may take long), so without one a
// device that stops sending would hold its connection and its upstream
// request forever.
type deadlineBody struct {
	io.ReadCloser
	rc       *http.ResponseController
	d        time.Duration
	timedOut atomic.Bool
	ended    atomic.Bool
	due      atomic.Int64 // the deadline of a read in progress (Unix ns), 0 when none
}

// stalled reports whether the body timed out, or is timing out: the
// server ends the request's context from inside the read that fails, so
// the request may fail before that read returns and says why.
func (b *deadlineBody) stalled() bool {
	if b.timedOut.Load() {
		return true
	}
	due := b.due.Load()
	return due != 0 && time.Now().UnixNano() >= due
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	if b.ended.Load() {
		return b.ReadCloser.Read(p)
	}
	due := time.Now().Add(b.d)
	b.rc.SetReadDeadline(due)
	b.due.Store(due.UnixNano())
	n, err := b.ReadCloser.Read(p)
	b.due.Store(0)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && b.ended.CompareAndSwap(false, true) {
			// The deadline stays: the server would otherwise wait for
			// the rest of the body, to discard it, before it answers.
			b.timedOut.Store(true)
			b.rc.SetReadDeadline(time.Now())
		}
		b.clear()
	}
	return n, err
}

func (b *deadlineBody) Close() error {
	err := b.ReadCloser.Close()
	b.clear()
	return err
}

// clear lifts the deadline once the body is done with: the server reads on
// in the background to notice a device that hangs up during a long poll,
// and a deadline left behind would end that read, and the request with it.
func (b *deadlineBody) clear() {
	if b.ended.CompareAndSwap(false, true) {
		b.rc.SetReadDeadline(time.Time{})
	}
}

// heldPolls are the long polls each user holds open.
type heldPolls struct {
	mu    sync.Mutex
	users map[string][]*heldPoll
}

type heldPoll struct {
	device string
	end    context.CancelCauseFunc
}

// errLongPollEnded is the cause of a long poll ended for a newer one.
var errLongPollEnded = errors.New("long poll ended: the device sent a new Ping, or the user holds MaxLongPollsPerUser")

// hold registers a long poll of the account sid, ending device's older one
// (device is "" for a Sync, which ends none) and, past max, the account's
// oldest. Device ids compare with ASCII letters folded only (foldDeviceID).
func (hp *heldPolls) hold(user, device string, max int, end context.CancelCauseFunc) *heldPoll {
	p := &heldPoll{device: foldDeviceID(device), end: end}
	hp.mu.Lock()
	defer hp.mu.Unlock()
	if hp.users == nil {
		hp.users = map[string][]*heldPoll{}
	}
	list := hp.users[user]
	kept := list[:0]
	for _, q := range list {
		if p.device != "" && q.device == p.device {
			q.end(errLongPollEnded)
			continue
		}
		kept = append(kept, q)
	}
	for len(kept) >= max {
		kept[0].end(errLongPollEnded)
		kept = kept[1:]
	}
	hp.users[user] = append(kept, p)
	return p
}

func (hp *heldPolls) release(user string, p *heldPoll) {
	hp.mu.Lock()
	defer hp.mu.Unlock()
	list := hp.users[user]
	for i, q := range list {
		if q == p {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(hp.users, user)
	} else {
		hp.users[user] = list
	}
}
