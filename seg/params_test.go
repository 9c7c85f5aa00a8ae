package seg

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// easQuery builds a base64 query of MS-ASHTTP 2.2.1.1.1.1.
func easQuery(version, cmd byte, id, typ []byte, key []byte, params ...[]byte) string {
	b := []byte{version, cmd, 0x09, 0x04, byte(len(id))}
	b = append(b, id...)
	b = append(b, byte(len(key)))
	b = append(b, key...)
	b = append(b, byte(len(typ)))
	b = append(b, typ...)
	for _, p := range params {
		b = append(b, p...)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func tlv(tag byte, v string) []byte { return append([]byte{tag, byte(len(v))}, v...) }

func TestParseParams(t *testing.T) {
	guid := []byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	for _, tc := range []struct {
		name, query string
		header      map[string]string
		want        Params
	}{
		{"options", "", nil, Params{}},
		// MS-ASHTTP 2.2.1.1.1.1's own example, equivalent to
		// Cmd=Sync&DeviceId=v140Device&DeviceType=SmartPhone with version 14.0.
		{"base64 spec example", "jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l", nil,
			Params{Cmd: "Sync", DeviceID: "v140Device", DeviceType: "SmartPhone", ProtocolVersion: "14.0", Locale: 0x0409, Base64: true}},
		{"plain", "Cmd=Sync&User=alice&DeviceId=ABC123&DeviceType=iPhone", map[string]string{"MS-ASProtocolVersion": "14.1", "X-MS-PolicyKey": "3942919513"},
			Params{Cmd: "Sync", User: "alice", DeviceID: "ABC123", DeviceType: "iPhone", ProtocolVersion: "14.1", PolicyKey: 3942919513}},
		{"plain lower-case names", "cmd=ping&user=CORP%5Calice&deviceid=X&devicetype=Android", nil,
			Params{Cmd: "Ping", User: `CORP\alice`, DeviceID: "X", DeviceType: "Android"}},
		{"plain attachment", "Cmd=GetAttachment&AttachmentName=5%3A1%3A0&User=a&DeviceId=D&DeviceType=T&SaveInSent=T", nil,
			Params{Cmd: "GetAttachment", AttachmentName: "5:1:0", User: "a", DeviceID: "D", DeviceType: "T", SaveInSent: true}},
		{"base64", easQuery(141, 18, []byte("DEV1"), []byte("iPhone"), []byte{1, 0, 0, 0}, tlv(8, "alice@corp.example.test"), tlv(7, "\x03")), nil,
			Params{Cmd: "Ping", User: "alice@corp.example.test", DeviceID: "DEV1", DeviceType: "iPhone", ProtocolVersion: "14.1",
				PolicyKey: 1, Locale: 0x0409, SaveInSent: true, AcceptMultiPart: true, Base64: true}},
		{"base64 binary device id", easQuery(121, 0, guid, []byte("WP"), nil, tlv(1, "7"), tlv(3, "7:1"), tlv(2, "deprecated")), nil,
			Params{Cmd: "Sync", DeviceID: "DEADBEEF0102030405060708090A0B0C", DeviceType: "WP", ProtocolVersion: "12.1",
				Locale: 0x0409, CollectionID: "7", ItemID: "7:1", Base64: true}},
		{"base64 url-escaped without padding", strings.NewReplacer("+", "%2B", "/", "%2F", "=", "").Replace(
			easQuery(160, 9, []byte("D"), []byte("T"), nil)), nil,
			Params{Cmd: "FolderSync", DeviceID: "D", DeviceType: "T", ProtocolVersion: "16.0", Locale: 0x0409, Base64: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/Microsoft-Server-ActiveSync?"+tc.query, nil)
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			got, err := ParseParams(r)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseParamsRefuses(t *testing.T) {
	for name, q := range map[string]string{
		"unknown command":        "Cmd=Delete&User=a&DeviceId=D&DeviceType=T",
		"no DeviceId":            "Cmd=Sync&User=a&DeviceType=T",
		"no DeviceType":          "Cmd=Sync&User=a&DeviceId=D",
		"repeated User":          "Cmd=Sync&User=a&User=b&DeviceId=D&DeviceType=T",
		"CR LF":                  "Cmd=Sync&User=a%0D%0AX:1&DeviceId=D&DeviceType=T",
		"NUL":                    "Cmd=Sync&User=a&DeviceId=D%00&DeviceType=T",
		"invalid UTF-8":          "Cmd=Sync&User=%FF&DeviceId=D&DeviceType=T",
		"long DeviceId":          "Cmd=Sync&DeviceId=" + strings.Repeat("D", 65) + "&DeviceType=T",
		"bad escape":             "Cmd=Sync&DeviceId=%zz&DeviceType=T",
		"not base64":             "!!!!",
		"base64 truncated":       base64.StdEncoding.EncodeToString([]byte{141, 0, 9, 4, 5, 'a'}),
		"base64 policy key of 3": easQuery(141, 0, []byte("D"), []byte("T"), []byte{1, 2, 3}),
		"base64 long device id":  easQuery(141, 0, []byte(strings.Repeat("D", 17)), []byte("T"), nil),
		"base64 command 99":      easQuery(141, 99, []byte("D"), []byte("T"), nil),
		"base64 version 2":       easQuery(2, 0, []byte("D"), []byte("T"), nil),
		"base64 options of 2":    easQuery(141, 0, []byte("D"), []byte("T"), nil, tlv(7, "ab")),
		"base64 CR in item":      easQuery(141, 0, []byte("D"), []byte("T"), nil, tlv(3, "a\r\n")),
		"base64 tlv truncated":   easQuery(141, 0, []byte("D"), []byte("T"), nil, []byte{8, 9, 'a'}),
		"base64 no device id":    easQuery(141, 0, nil, []byte("T"), nil),
	} {
		r := httptest.NewRequest(http.MethodPost, "/Microsoft-Server-ActiveSync", nil)
		r.URL.RawQuery = q
		if p, err := ParseParams(r); !errors.Is(err, ErrBadParams) {
			t.Errorf("%s: %+v %v", name, p, err)
		}
	}
	r := httptest.NewRequest(http.MethodPost, "/Microsoft-Server-ActiveSync?Cmd=Sync&DeviceId=D&DeviceType=T", nil)
	r.Header.Set("X-MS-PolicyKey", "12x")
	if _, err := ParseParams(r); !errors.Is(err, ErrBadParams) {
		t.Errorf("bad policy key: %v", err)
	}
	r.Header.Set("X-MS-PolicyKey", "1")
	r.Header.Set("MS-ASProtocolVersion", "14.1\r\nX: y")
	if _, err := ParseParams(r); !errors.Is(err, ErrBadParams) {
		t.Errorf("CR LF in the version header: %v", err)
	}
}

// FuzzParseParams: any query, in either form, parses or is refused with
// ErrBadParams; what parses is free of control characters and parses the
// same again when written back in the plain form.
func FuzzParseParams(f *testing.F) {
	f.Add("Cmd=Sync&User=alice&DeviceId=ABC&DeviceType=iPhone")
	f.Add("jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l") // MS-ASHTTP's example
	f.Add(easQuery(141, 18, []byte("DEV1"), []byte("iPhone"), []byte{1, 0, 0, 0}, tlv(8, "alice"), tlv(7, "\x03")))
	f.Add(easQuery(121, 4, []byte{0, 1, 2, 0xff}, []byte("WP"), nil, tlv(0, "att"), tlv(4, "L"), tlv(6, "O")))
	f.Fuzz(func(t *testing.T, q string) {
		r := httptest.NewRequest(http.MethodPost, "/Microsoft-Server-ActiveSync", nil)
		r.URL.RawQuery = q
		p, err := ParseParams(r)
		if err != nil {
			if !errors.Is(err, ErrBadParams) {
				t.Fatalf("error not ErrBadParams: %v", err)
			}
			return
		}
		for _, v := range []string{p.Cmd, p.User, p.DeviceID, p.DeviceType, p.ProtocolVersion, p.CollectionID, p.ItemID, p.LongID, p.AttachmentName, p.Occurrence} {
			if strings.ContainsAny(v, "\r\n\x00") {
				t.Fatalf("control character passed: %q", v)
			}
		}
		if p.Cmd != "" && commandNames[strings.ToLower(p.Cmd)] != p.Cmd {
			t.Fatalf("unknown command passed: %q", p.Cmd)
		}
	})
}
