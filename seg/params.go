package seg

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Params are the ActiveSync request parameters of MS-ASHTTP 2.2.1.1.1, from
// either query form. Device IDs in the base64 form may be binary (a GUID):
// printable ASCII is kept as it is, anything else becomes upper-case hex, so a
// Params value is always safe to log.
type Params struct {
	Cmd        string // the command name, e.g. "Sync", "Ping"; empty for OPTIONS
	User       string // the User parameter as the device sent it
	DeviceID   string
	DeviceType string
	// ProtocolVersion is "14.1" and the like: the MS-ASProtocolVersion header
	// for the plain form, the version byte for the base64 form.
	ProtocolVersion string
	// PolicyKey is the X-MS-PolicyKey header or the base64 form's key; 0 when
	// the device sent none.
	PolicyKey uint32
	Locale    uint16 // base64 form only

	CollectionID    string
	ItemID          string
	LongID          string
	AttachmentName  string
	Occurrence      string
	SaveInSent      bool
	AcceptMultiPart bool

	// Base64 is true when the query used the base64 form.
	Base64 bool
}

// LongPoll reports whether the command may wait for up to an hour before
// Exchange answers (Ping, Sync with a HeartbeatInterval or Wait).
func (p Params) LongPoll() bool { return p.Cmd == "Ping" || p.Cmd == "Sync" }

// ErrBadParams is matched by every ParseParams error.
var ErrBadParams = errors.New("seg: malformed ActiveSync request")

// commandCodes are MS-ASHTTP 2.2.1.1.1.1.2's command codes; the names are
// also the only Cmd values the plain form accepts.
var commandCodes = map[byte]string{
	0: "Sync", 1: "SendMail", 2: "SmartForward", 3: "SmartReply", 4: "GetAttachment",
	5: "GetHierarchy", 6: "CreateCollection", 7: "DeleteCollection", 8: "MoveCollection",
	9: "FolderSync", 10: "FolderCreate", 11: "FolderDelete", 12: "FolderUpdate",
	13: "MoveItems", 14: "GetItemEstimate", 15: "MeetingResponse", 16: "Search",
	17: "Settings", 18: "Ping", 19: "ItemOperations", 20: "Provision",
	21: "ResolveRecipients", 22: "ValidateCert", 23: "Find",
}

var commandNames = func() map[string]string {
	m := make(map[string]string, len(commandCodes))
	for _, n := range commandCodes {
		m[strings.ToLower(n)] = n
	}
	return m
}()

// Limits on parameter lengths. MS-ASHTTP allows 32 characters for a plain
// DeviceId and 16 bytes in the base64 form; the others are generous bounds
// that no real device reaches.
const (
	maxDeviceID   = 64
	maxParamLen   = 1024
	maxUserLen    = 256
	maxRawQuery   = 4096
	binaryIDMax   = 16
	binaryTypeMax = 16
)

// ParseParams reads the ActiveSync parameters of r. A request without a query
// (OPTIONS) gives empty Params. Anything that is not a well-formed EAS query
// (an unknown command, a missing DeviceId, control characters, truncated
// base64 data) is an error matching ErrBadParams.
func ParseParams(r *http.Request) (Params, error) {
	raw := r.URL.RawQuery
	if raw == "" {
		return Params{}, nil
	}
	if len(raw) > maxRawQuery {
		return Params{}, badParams("query of %d bytes", len(raw))
	}
	var p Params
	var err error
	if isPlainQuery(raw) {
		p, err = parsePlain(raw)
		if err == nil {
			p.ProtocolVersion = r.Header.Get("MS-ASProtocolVersion")
			if k := r.Header.Get("X-MS-PolicyKey"); k != "" {
				v, perr := strconv.ParseUint(k, 10, 32)
				if perr != nil {
					return Params{}, badParams("X-MS-PolicyKey is not a number")
				}
				p.PolicyKey = uint32(v)
			}
		}
	} else {
		p, err = parseBase64Query(raw)
	}
	if err != nil {
		return Params{}, err
	}
	if err := checkText("MS-ASProtocolVersion", p.ProtocolVersion, 16); err != nil {
		return Params{}, err
	}
	return p, nil
}

// isPlainQuery tells the plain form (key=value pairs) from the base64 form,
// whose alphabet has '=' only as trailing padding.
func isPlainQuery(raw string) bool {
	i := strings.IndexByte(raw, '=')
	return i >= 0 && strings.TrimRight(raw[i:], "=") != ""
}

func parsePlain(raw string) (Params, error) {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return Params{}, badParams("query: %v", err)
	}
	var p Params
	for k, v := range q {
		if len(v) != 1 {
			return Params{}, badParams("parameter %q given %d times", k, len(v))
		}
		val := v[0]
		switch strings.ToLower(k) {
		case "cmd":
			name, ok := commandNames[strings.ToLower(val)]
			if !ok {
				return Params{}, badParams("unknown command %q", printable(val))
			}
			p.Cmd = name
		case "user":
			p.User = val
		case "deviceid":
			p.DeviceID = val
		case "devicetype":
			p.DeviceType = val
		case "collectionid":
			p.CollectionID = val
		case "itemid":
			p.ItemID = val
		case "longid":
			p.LongID = val
		case "attachmentname":
			p.AttachmentName = val
		case "occurrence":
			p.Occurrence = val
		case "saveinsent":
			p.SaveInSent = equalASCII(val, "T")
		case "acceptmultipart":
			p.AcceptMultiPart = equalASCII(val, "T")
		default:
			// Unknown parameters pass through to Exchange; they must still be text.
		}
		if err := checkText(k, val, maxParamLen); err != nil {
			return Params{}, err
		}
	}
	if err := p.check(); err != nil {
		return Params{}, err
	}
	return p, nil
}

func (p *Params) check() error {
	if p.Cmd == "" {
		return badParams("no Cmd")
	}
	if p.DeviceID == "" {
		return badParams("no DeviceId")
	}
	if p.DeviceType == "" {
		return badParams("no DeviceType")
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{{"User", p.User, maxUserLen}, {"DeviceId", p.DeviceID, maxDeviceID}, {"DeviceType", p.DeviceType, maxDeviceID}} {
		if err := checkText(f.name, f.v, f.max); err != nil {
			return err
		}
	}
	return nil
}

// parseBase64Query decodes MS-ASHTTP 2.2.1.1.1.1: version, command code,
// locale, device id, policy key, device type, then tag/length/value
// parameters.
func parseBase64Query(raw string) (Params, error) {
	s, err := url.QueryUnescape(raw)
	if err != nil {
		return Params{}, badParams("base64 query: %v", err)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		// Some clients leave the padding off.
		b, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
		if err != nil {
			return Params{}, badParams("base64 query does not decode")
		}
	}
	d := decoder{b: b}
	var p Params
	p.Base64 = true
	ver := d.byte()
	code := d.byte()
	p.Locale = d.uint16()
	id := d.field("device id", binaryIDMax)
	keyLen := d.byte()
	switch keyLen {
	case 0:
	case 4:
		p.PolicyKey = d.uint32()
	default:
		if d.err == nil {
			d.err = badParams("policy key of %d bytes", keyLen)
		}
	}
	typ := d.field("device type", binaryTypeMax)
	for d.err == nil && len(d.b) > 0 {
		tag := d.byte()
		val := d.field("parameter", 255)
		if d.err != nil {
			break
		}
		switch tag {
		case 0:
			p.AttachmentName = string(val)
		case 1:
			p.CollectionID = string(val)
		case 3:
			p.ItemID = string(val)
		case 4:
			p.LongID = string(val)
		case 6:
			p.Occurrence = string(val)
		case 7:
			if len(val) != 1 {
				return Params{}, badParams("Options of %d bytes", len(val))
			}
			p.SaveInSent = val[0]&0x01 != 0
			p.AcceptMultiPart = val[0]&0x02 != 0
		case 8:
			p.User = string(val)
		default:
			// Deprecated tags (CollectionName, ParentId) and unknown ones pass through.
		}
	}
	if d.err != nil {
		return Params{}, d.err
	}
	name, ok := commandCodes[code]
	if !ok {
		return Params{}, badParams("unknown command code %d", code)
	}
	p.Cmd = name
	if ver < 10 {
		return Params{}, badParams("protocol version byte %d", ver)
	}
	p.ProtocolVersion = fmt.Sprintf("%d.%d", ver/10, ver%10)
	p.DeviceID = deviceText(id)
	p.DeviceType = string(typ)
	for _, f := range []struct{ name, v string }{{"AttachmentName", p.AttachmentName}, {"CollectionId", p.CollectionID},
		{"ItemId", p.ItemID}, {"LongId", p.LongID}, {"Occurrence", p.Occurrence}} {
		if err := checkText(f.name, f.v, maxParamLen); err != nil {
			return Params{}, err
		}
	}
	if err := p.check(); err != nil {
		return Params{}, err
	}
	return p, nil
}

// decoder reads the base64 form; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.err = badParams("base64 query ends inside its %s", what)
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if v := d.take(1, "header"); v != nil {
		return v[0]
	}
	return 0
}

func (d *decoder) uint16() uint16 {
	if v := d.take(2, "locale"); v != nil {
		return binary.LittleEndian.Uint16(v)
	}
	return 0
}

func (d *decoder) uint32() uint32 {
	if v := d.take(4, "policy key"); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

func (d *decoder) field(what string, max int) []byte {
	n := int(d.byte())
	if d.err == nil && n > max {
		d.err = badParams("%s of %d bytes", what, n)
		return nil
	}
	return d.take(n, what)
}

// deviceText keeps a printable device id and hex-encodes a binary one.
func deviceText(b []byte) string {
	for _, c := range b {
		if c < 0x21 || c > 0x7e {
			return strings.ToUpper(fmt.Sprintf("%x", b))
		}
	}
	return string(b)
}

// checkText refuses control characters (CR and LF above all: these values
// reach logs and headers) and invalid lengths.
func checkText(name, v string, max int) error {
	if len(v) > max {
		return badParams("%s of %d bytes", printable(name), len(v))
	}
	for _, r := range v {
		if isControl(r) || r == '\uFFFD' {
			return badParams("%s holds a control character or invalid UTF-8", printable(name))
		}
	}
	return nil
}

// printable quotes untrusted text for an error message, cut short.
func printable(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	q := strconv.QuoteToASCII(s)
	return q[1 : len(q)-1]
}

// isControl reports an ASCII control character (CR and LF above all).
func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func badParams(format string, args ...any) error {
	return errorf("%w: %s", ErrBadParams, fmt.Sprintf(format, args...))
}
