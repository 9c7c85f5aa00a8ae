package winrstest

import (
	"strings"
	"time"
)

// ASACredential is one Alternate Service Account credential of a server.
type ASACredential struct {
	UserName, Password string
	WhenAdded          time.Time
}

type exchangeServer struct {
	name, version string
	creds         []ASACredential // latest first, at most two (latest, previous)
}

// secureString and psCredential stand for the .NET types.
type secureString struct{ s string }

type psCredential struct {
	user string
	pw   *secureString // nil when read without the password
}

const exSnapIn = "Microsoft.Exchange.Management.PowerShell.SnapIn"

// Exchange versions as AdminDisplayVersion shows them.
const (
	Exchange2013 = "Version 15.0 (Build 1497.2)"
	Exchange2016 = "Version 15.1 (Build 2507.6)"
	Exchange2019 = "Version 15.2 (Build 1544.4)"
)

// AddExchangeServer adds a server to the Exchange organisation this host
// manages (a management shell reaches every server by -Identity, and the
// ASA credentials live with the organisation).
func (h *Host) AddExchangeServer(name, version string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.exch == nil {
		h.exch = map[string]*exchangeServer{}
		for k, v := range h.exchangeCmdlets() {
			h.cmdlets[k] = v
		}
	}
	h.exch[strings.ToLower(name)] = &exchangeServer{name: name, version: version}
}

// ASA returns a server's credentials, latest first.
func (h *Host) ASA(server string) []ASACredential {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.exch[strings.ToLower(server)]
	if !ok {
		return nil
	}
	return append([]ASACredential(nil), s.creds...)
}

func (h *Host) exchangeCmdlets() map[string]cmdlet {
	server := func(r *runner, c *call, noun string) (*exchangeServer, error) {
		if r.vars["\x00snapin"] != true {
			return nil, errorf("The term '%s' is not recognized as the name of a cmdlet, function, script file, or operable program. (load the Exchange snap-in first)", c.name)
		}
		id, err := c.mustStr("identity")
		if err != nil {
			return nil, err
		}
		s, ok := h.exch[strings.ToLower(id)]
		if !ok {
			return nil, errorf("%s: The operation couldn't be performed because object '%s' couldn't be found on 'dc1.corp.example.test'.", c.name, id)
		}
		if noun != "" {
			// *-ClientAccessService exists from Exchange 2016 (15.1); 2013 has *-ClientAccessServer.
			is2013 := strings.Contains(s.version, "15.0")
			if (noun == "Service") == is2013 {
				return nil, errorf("The term '%s' is not recognized as the name of a cmdlet, function, script file, or operable program. (%s is %s)", c.name, s.name, s.version)
			}
		}
		return s, nil
	}
	credObj := func(cr ASACredential, withPassword bool) *object {
		pc := &psCredential{user: cr.UserName}
		if withPassword {
			pc.pw = &secureString{cr.Password}
		}
		return newObject("Credential", pc, "WhenAddedUTC", cr.WhenAdded)
	}
	get := func(noun string) cmdlet {
		return cmdlet{params: params("Identity", "!IncludeAlternateServiceAccountCredentialStatus", "!IncludeAlternateServiceAccountCredentialPassword"),
			run: func(r *runner, c *call) ([]any, error) {
				s, err := server(r, c, noun)
				if err != nil {
					return nil, err
				}
				withPW := c.switches["includealternateserviceaccountcredentialpassword"]
				var cfg any
				if withPW || c.switches["includealternateserviceaccountcredentialstatus"] {
					var eff []any
					for _, cr := range s.creds {
						eff = append(eff, credObj(cr, withPW))
					}
					if eff == nil {
						eff = []any{}
					}
					o := newObject("EffectiveCredentials", eff, "Latest", nil, "Previous", nil)
					if len(eff) > 0 {
						o.set("Latest", eff[0])
					}
					if len(eff) > 1 {
						o.set("Previous", eff[1])
					}
					cfg = o
				}
				return []any{newObject("Name", s.name, "AlternateServiceAccountConfiguration", cfg)}, nil
			}}
	}
	set := func(noun string) cmdlet {
		return cmdlet{params: params("Identity", "AlternateServiceAccountCredential", "!RemoveAlternateServiceAccountCredentials"),
			run: func(r *runner, c *call) ([]any, error) {
				s, err := server(r, c, noun)
				if err != nil {
					return nil, err
				}
				if c.switches["removealternateserviceaccountcredentials"] {
					s.creds = nil
					return nil, nil
				}
				v, ok := c.named["alternateserviceaccountcredential"]
				if !ok {
					return nil, errorf("%s: nothing to set", c.name)
				}
				for _, x := range unroll(v) {
					pc, ok := x.(*psCredential)
					if !ok {
						return nil, errorf("%s: Cannot convert '%v' to the type 'System.Management.Automation.PSCredential'", c.name, x)
					}
					if pc.pw == nil {
						return nil, errorf("%s: the credential for %s carries no password", c.name, pc.user)
					}
					if !strings.Contains(pc.user, `\`) {
						return nil, errorf("%s: the user name must be DOMAIN\\name, got %s", c.name, pc.user)
					}
					nc := ASACredential{UserName: pc.user, Password: pc.pw.s, WhenAdded: time.Now().UTC()}
					s.creds = append([]ASACredential{nc}, s.creds...)
					if len(s.creds) > 2 {
						s.creds = s.creds[:2] // latest and previous
					}
				}
				return nil, nil
			}}
	}
	m := map[string]cmdlet{
		"add-pssnapin": {params: params("Name"), run: func(r *runner, c *call) ([]any, error) {
			n, err := c.mustStr("name")
			if err != nil {
				return nil, err
			}
			if !strings.EqualFold(n, exSnapIn) {
				return nil, errorf("Add-PSSnapin: The Windows PowerShell snap-in '%s' is not installed on this computer.", n)
			}
			r.vars["\x00snapin"] = true
			return nil, nil
		}},
		"get-exchangeserver": {params: params("Identity"), run: func(r *runner, c *call) ([]any, error) {
			s, err := server(r, c, "")
			if err != nil {
				return nil, err
			}
			return []any{newObject("Name", s.name, "AdminDisplayVersion", s.version)}, nil
		}},
		"get-clientaccessservice": get("Service"),
		"get-clientaccessserver":  get("Server"),
		"set-clientaccessservice": set("Service"),
		"set-clientaccessserver":  set("Server"),
		"convertto-securestring": {params: params("String", "!AsPlainText", "!Force"), run: func(r *runner, c *call) ([]any, error) {
			s, err := c.mustStr("string")
			if err != nil {
				return nil, err
			}
			if !c.switches["asplaintext"] || !c.switches["force"] {
				return nil, errorf("ConvertTo-SecureString: plain text needs -AsPlainText -Force")
			}
			return []any{&secureString{s}}, nil
		}},
		"new-object": {params: params("TypeName", "ArgumentList"), run: func(r *runner, c *call) ([]any, error) {
			t, err := c.mustStr("typename")
			if err != nil {
				return nil, err
			}
			if t != "System.Management.Automation.PSCredential" {
				return nil, errorf("test host: New-Object is modeled for PSCredential only, not %s", t)
			}
			args, _ := c.named["argumentlist"].([]any)
			if len(args) != 2 {
				return nil, errorf("New-Object: PSCredential takes a user name and a SecureString")
			}
			u, ok1 := args[0].(string)
			p, ok2 := args[1].(*secureString)
			if !ok1 || !ok2 {
				return nil, errorf("New-Object: PSCredential takes a user name and a SecureString")
			}
			return []any{&psCredential{user: u, pw: p}}, nil
		}},
		"get-date": {params: params("Date", "Format"), run: func(r *runner, c *call) ([]any, error) {
			f, _ := c.str("format")
			if f != "o" {
				return nil, errorf("test host: Get-Date is modeled with -Format 'o' only")
			}
			in := c.input
			if d, ok := c.named["date"]; ok {
				in = []any{d}
			}
			var out []any
			for _, v := range in {
				t, ok := v.(time.Time)
				if !ok {
					return nil, errorf("Get-Date: Cannot convert '%v' to System.DateTime", v)
				}
				out = append(out, t.UTC().Format("2006-01-02T15:04:05.0000000Z"))
			}
			return out, nil
		}},
	}
	for name, cm := range m {
		cm.run = h.wrapRun(name, cm.run)
		m[name] = cm
	}
	return m
}
