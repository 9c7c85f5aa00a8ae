package winrstest

import (
	"strings"
	"sync"
	"time"
)

// IISAuth is one location's authentication sections, as IIS keeps them in
// applicationHost.config.
type IISAuth struct {
	Basic, Windows, KernelMode, AppPoolCredentials bool
	Providers                                      []string
	// TokenChecking and EPFlags are windowsAuthentication's
	// extendedProtection (None, Allow or Require; flags comma-separated).
	// Empty reads as None, IIS's default.
	TokenChecking, EPFlags string
}

// Host is the model of one Windows server: what segkcd reads and changes
// there. It is a model, not Windows: it knows only the commands segkcd
// sends and refuses every other.
type Host struct {
	Name string

	mu      sync.Mutex
	iis     map[string]*IISAuth // location -> sections
	groups  map[string][]string // local group -> members
	files   map[string]string
	env     map[string]string
	scripts []string // every script run, for golden tests
	failOn  map[string]error
	cmdlets map[string]cmdlet
	exch    map[string]*exchangeServer // the Exchange organisation, when modeled
	// AfterRun, when set, is called after every script (outside the lock).
	AfterRun func()
}

const (
	appHost     = "MACHINE/WEBROOT/APPHOST"
	authPrefix  = "system.webServer/security/authentication/"
	tempDir     = `C:\Users\admin\AppData\Local\Temp`
	notFoundMsg = "Filename: \\\\?\\C:\\Windows\\system32\\inetsrv\\config\\applicationHost.config Error: Unrecognized configuration path 'MACHINE/WEBROOT/APPHOST/%s'"
)

// NewHost is a server with IIS as Exchange installs it: on ActiveSync,
// Basic on and Windows authentication off; on EWS, Windows authentication
// with Negotiate and NTLM; IIS_IUSRS with its built-in member.
func NewHost(name string) *Host {
	h := &Host{
		Name: name,
		iis: map[string]*IISAuth{
			"Default Web Site/Microsoft-Server-ActiveSync": {Basic: true, KernelMode: true, Providers: []string{"Negotiate", "NTLM"}},
			"Default Web Site/EWS":                         {Windows: true, KernelMode: true, Providers: []string{"Negotiate", "NTLM"}},
			"Default Web Site/OWA":                         {Basic: false, Windows: true, KernelMode: true, Providers: []string{"Negotiate", "NTLM"}},
		},
		groups: map[string][]string{"IIS_IUSRS": {`NT AUTHORITY\IUSR`}, "Administrators": {`CORP\Administrator`}},
		files:  map[string]string{},
		env:    map[string]string{"temp": tempDir, "computername": strings.ToUpper(name)},
		failOn: map[string]error{},
	}
	h.cmdlets = h.commonCmdlets()
	for k, v := range h.iisCmdlets() {
		h.cmdlets[k] = v
	}
	return h
}

// IIS returns a copy of a location's sections (nil if there is no such location).
func (h *Host) IIS(location string) *IISAuth {
	h.mu.Lock()
	defer h.mu.Unlock()
	a, ok := h.iis[location]
	if !ok {
		return nil
	}
	c := *a
	c.Providers = append([]string(nil), a.Providers...)
	return &c
}

// SetIIS replaces a location's sections (test setup).
func (h *Host) SetIIS(location string, a IISAuth) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.iis[location] = &a
}

// Members lists a local group.
func (h *Host) Members(group string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.groups[group]...)
}

// Scripts returns the scripts run so far.
func (h *Host) Scripts() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.scripts...)
}

// FailOn makes the next call of a cmdlet (lower-case name) fail with err,
// to test what a failure half-way leaves behind.
func (h *Host) FailOn(cmdletName string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failOn[strings.ToLower(cmdletName)] = err
}

// Files lists the host's files (leftovers of staged scripts show up here).
func (h *Host) Files() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var names []string
	for n := range h.files {
		names = append(names, n)
	}
	return names
}

func (h *Host) readFile(path string) (string, bool) {
	s, ok := h.files[strings.ToLower(path)]
	return s, ok
}

// Run executes a script as powershell.exe would: stdout, CLIXML stderr,
// exit code 0 or 1.
func (h *Host) Run(script string) (stdout, stderr string, code int) {
	return h.run(script, nil, nil)
}

// run is Run with the command's standard input lines and its stop signal.
func (h *Host) run(script string, stdin []string, stop <-chan struct{}) (stdout, stderr string, code int) {
	if h.AfterRun != nil {
		defer h.AfterRun()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.scripts = append(h.scripts, script)
	sts, err := parse(script)
	if err != nil {
		return "", clixml("ParserError: " + err.Error()), 1
	}
	r := &runner{h: h, vars: map[string]any{}, stdin: stdin, stop: stop}
	err = r.exec(sts)
	var b strings.Builder
	for _, v := range r.out {
		if s, ok := v.(string); ok {
			b.WriteString(s)
		} else {
			b.WriteString(toJSON(v))
		}
		b.WriteString("\r\n")
	}
	if err != nil {
		return b.String(), clixml(err.Error()), 1
	}
	return b.String(), "", 0
}

// wrapRun makes a cmdlet honour FailOn.
func (h *Host) wrapRun(name string, f func(r *runner, c *call) ([]any, error)) func(r *runner, c *call) ([]any, error) {
	return func(r *runner, c *call) ([]any, error) {
		if err, ok := h.failOn[name]; ok {
			delete(h.failOn, name)
			return nil, err
		}
		return f(r, c)
	}
}

func params(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		isSwitch := strings.HasPrefix(n, "!")
		m[strings.ToLower(strings.TrimPrefix(n, "!"))] = isSwitch
	}
	return m
}

func (h *Host) commonCmdlets() map[string]cmdlet {
	m := map[string]cmdlet{
		"import-module": {params: params("Name"), maxPos: 1, run: func(r *runner, c *call) ([]any, error) {
			name, _ := c.str("name")
			if name == "" && len(c.positional) == 1 {
				name, _ = c.positional[0].(string)
			}
			if !strings.EqualFold(name, "WebAdministration") {
				return nil, errorf("Import-Module: The specified module '%s' was not loaded because no valid module file was found.", name)
			}
			return nil, nil
		}},
		"start-sleep": {params: params("Seconds"), run: func(r *runner, c *call) ([]any, error) {
			// A command that runs a while: it ends early when WinRS stops it.
			n, ok := c.named["seconds"].(float64)
			if !ok || n < 0 {
				return nil, errorf("Start-Sleep: -Seconds takes a number")
			}
			select {
			case <-time.After(time.Duration(n * float64(time.Second))):
				return nil, nil
			case <-r.stop:
				return nil, errorf("The pipeline has been stopped.")
			}
		}},
		"convertto-json": {params: params("InputObject", "Depth", "!Compress"), run: func(r *runner, c *call) ([]any, error) {
			var v any
			if in, ok := c.named["inputobject"]; ok {
				v = in
			} else {
				v = collapse(c.input)
			}
			if !c.switches["compress"] {
				return nil, errorf("test host: use ConvertTo-Json -Compress (the model writes compressed JSON only)")
			}
			return []any{toJSON(v)}, nil
		}},
		"select-object": {params: params("ExpandProperty", "First"), run: func(r *runner, c *call) ([]any, error) {
			if n, ok := c.named["first"].(float64); ok {
				if int(n) < len(c.input) {
					return c.input[:int(n)], nil
				}
				return c.input, nil
			}
			p, err := c.mustStr("expandproperty")
			if err != nil {
				return nil, err
			}
			return memberOf(c.input, p, "Select-Object")
		}},
		"foreach-object": {params: params("MemberName"), run: func(r *runner, c *call) ([]any, error) {
			p, err := c.mustStr("membername")
			if err != nil {
				return nil, err
			}
			return memberOf(c.input, p, "ForEach-Object")
		}},
		"join-path": {params: params("Path", "ChildPath"), maxPos: 2, run: func(r *runner, c *call) ([]any, error) {
			parts := append([]any{}, c.positional...)
			if p, ok := c.named["path"]; ok {
				parts = append([]any{p}, parts...)
			}
			if p, ok := c.named["childpath"]; ok {
				parts = append(parts, p)
			}
			if len(parts) != 2 {
				return nil, errorf("Join-Path: two paths are needed")
			}
			a, _ := parts[0].(string)
			b, _ := parts[1].(string)
			return []any{strings.TrimRight(a, `\`) + `\` + b}, nil
		}},
		"add-content": {params: params("LiteralPath", "Value", "Encoding", "!NoNewline"), run: func(r *runner, c *call) ([]any, error) {
			p, err := c.mustStr("literalpath")
			if err != nil {
				return nil, err
			}
			v, err := c.mustStr("value")
			if err != nil {
				return nil, err
			}
			if !c.switches["nonewline"] {
				v += "\r\n"
			}
			h.files[strings.ToLower(p)] += v
			return nil, nil
		}},
		"remove-item": {params: params("LiteralPath", "!Force"), run: func(r *runner, c *call) ([]any, error) {
			p, err := c.mustStr("literalpath")
			if err != nil {
				return nil, err
			}
			if _, ok := h.files[strings.ToLower(p)]; !ok {
				return nil, errorf("Remove-Item: Cannot find path '%s' because it does not exist.", p)
			}
			delete(h.files, strings.ToLower(p))
			return nil, nil
		}},
		"get-localgroupmember": {params: params("Group"), run: func(r *runner, c *call) ([]any, error) {
			g, err := h.group(c)
			if err != nil {
				return nil, err
			}
			var out []any
			for _, m := range h.groups[g] {
				out = append(out, newObject("Name", m, "ObjectClass", "User"))
			}
			return out, nil
		}},
		"add-localgroupmember": {params: params("Group", "Member"), run: func(r *runner, c *call) ([]any, error) {
			g, m, err := h.groupMember(c)
			if err != nil {
				return nil, err
			}
			for _, have := range h.groups[g] {
				if strings.EqualFold(have, m) {
					return nil, errorf("Add-LocalGroupMember: %s is already a member of group %s.", m, g)
				}
			}
			h.groups[g] = append(h.groups[g], m)
			return nil, nil
		}},
		"remove-localgroupmember": {params: params("Group", "Member"), run: func(r *runner, c *call) ([]any, error) {
			g, m, err := h.groupMember(c)
			if err != nil {
				return nil, err
			}
			for i, have := range h.groups[g] {
				if strings.EqualFold(have, m) {
					h.groups[g] = append(h.groups[g][:i:i], h.groups[g][i+1:]...)
					return nil, nil
				}
			}
			return nil, errorf("Remove-LocalGroupMember: Member %s was not found in group %s.", m, g)
		}},
	}
	for name, cm := range m {
		cm.run = h.wrapRun(name, cm.run)
		m[name] = cm
	}
	return m
}

func (h *Host) group(c *call) (string, error) {
	g, err := c.mustStr("group")
	if err != nil {
		return "", err
	}
	for name := range h.groups {
		if strings.EqualFold(name, g) {
			return name, nil
		}
	}
	return "", errorf("%s: Group %s was not found.", c.name, g)
}

// groupMember reads -Group (an existing group) and -Member.
func (h *Host) groupMember(c *call) (group, member string, err error) {
	if group, err = h.group(c); err != nil {
		return "", "", err
	}
	member, err = c.mustStr("member")
	return group, member, err
}

// memberOf reads a property of each input object.
func memberOf(in []any, prop, cmd string) ([]any, error) {
	var out []any
	for _, v := range in {
		if pc, ok := v.(*psCredential); ok && strings.EqualFold(prop, "UserName") {
			out = append(out, pc.user)
			continue
		}
		if pc, ok := v.(*psCredential); ok && strings.EqualFold(prop, "GetNetworkCredential") {
			// The method: a NetworkCredential with the password in clear.
			if pc.pw == nil {
				return nil, errorf("%s: the credential of %s was read without its password", cmd, pc.user)
			}
			out = append(out, newObject("UserName", pc.user, "Password", pc.pw.s))
			continue
		}
		o, ok := v.(*object)
		if !ok {
			return nil, errorf("%s: property '%s' cannot be found on this object (%T)", cmd, prop, v)
		}
		pv, ok := o.get(prop)
		if !ok {
			return nil, errorf("%s: Property \"%s\" cannot be found.", cmd, prop)
		}
		out = append(out, unroll(pv)...) // a $null property emits nothing; a list emits its items
	}
	return out, nil
}

// iisCmdlets model the WebAdministration configuration cmdlets on the
// authentication sections.
func (h *Host) iisCmdlets() map[string]cmdlet {
	target := func(c *call) (*IISAuth, string, string, error) {
		ps, err := c.mustStr("pspath")
		if err != nil {
			return nil, "", "", err
		}
		if ps != appHost {
			return nil, "", "", errorf("%s: the test host models only -PSPath '%s', not '%s'", c.name, appHost, ps)
		}
		loc, err := c.mustStr("location")
		if err != nil {
			return nil, "", "", err
		}
		a, ok := h.iis[loc]
		if !ok {
			return nil, "", "", errorf(notFoundMsg, loc)
		}
		f, err := c.mustStr("filter")
		if err != nil {
			return nil, "", "", err
		}
		sec, ok := strings.CutPrefix(strings.TrimPrefix(f, "/"), authPrefix)
		if !ok {
			return nil, "", "", errorf("%s: the test host models only %s*, not %s", c.name, authPrefix, f)
		}
		name, _ := c.str("name")
		return a, sec, name, nil
	}
	attr := func(a *IISAuth, sec, name string) (*bool, error) {
		switch strings.ToLower(sec + "/" + name) {
		case "basicauthentication/enabled":
			return &a.Basic, nil
		case "windowsauthentication/enabled":
			return &a.Windows, nil
		case "windowsauthentication/usekernelmode":
			return &a.KernelMode, nil
		case "windowsauthentication/useapppoolcredentials":
			return &a.AppPoolCredentials, nil
		}
		return nil, errorf("Property %s is not found on %s%s.", name, authPrefix, sec)
	}
	isProviders := func(sec string) bool { return strings.EqualFold(sec, "windowsAuthentication/providers") }
	// extendedProtection's attributes are enumerations: strings, which IIS
	// checks against the values it knows.
	ep := func(a *IISAuth, sec, name string) (*string, []string, bool) {
		if !strings.EqualFold(sec, "windowsAuthentication") {
			return nil, nil, false
		}
		switch strings.ToLower(name) {
		case "extendedprotection.tokenchecking":
			return &a.TokenChecking, []string{"None", "Allow", "Require"}, true
		case "extendedprotection.flags":
			return &a.EPFlags, []string{"None", "Proxy", "NoServiceNameCheck", "AllowDotlessSpn", "ProxyCohosting"}, true
		}
		return nil, nil, false
	}
	m := map[string]cmdlet{
		"get-webconfigurationproperty": {params: params("PSPath", "Location", "Filter", "Name"), run: func(r *runner, c *call) ([]any, error) {
			a, sec, name, err := target(c)
			if err != nil {
				return nil, err
			}
			if isProviders(sec) {
				if name != "Collection" {
					return nil, errorf("Get-WebConfigurationProperty: use -Name 'Collection' on providers")
				}
				var out []any
				for _, p := range a.Providers {
					out = append(out, newObject("value", p))
				}
				return out, nil
			}
			if v, _, ok := ep(a, sec, name); ok {
				if *v == "" {
					return []any{"None"}, nil
				}
				return []any{*v}, nil
			}
			b, err := attr(a, sec, name)
			if err != nil {
				return nil, err
			}
			// A ConfigurationAttribute: the value is in .Value.
			return []any{newObject("Name", name, "TypeName", "System.Boolean", "Value", *b, "IsInheritedFromDefaultValue", false)}, nil
		}},
		"set-webconfigurationproperty": {params: params("PSPath", "Location", "Filter", "Name", "Value"), run: func(r *runner, c *call) ([]any, error) {
			a, sec, name, err := target(c)
			if err != nil {
				return nil, err
			}
			if p, allowed, ok := ep(a, sec, name); ok {
				v, ok := c.named["value"].(string)
				if !ok {
					return nil, errorf("Set-WebConfigurationProperty: %s expects a string, got %v", name, c.named["value"])
				}
				var set []string
				for _, f := range strings.Split(v, ",") {
					found := false
					for _, x := range allowed {
						if strings.EqualFold(strings.TrimSpace(f), x) {
							set, found = append(set, x), true
						}
					}
					if !found {
						return nil, errorf("Set-WebConfigurationProperty: '%s' is not a valid value for %s", f, name)
					}
				}
				*p = strings.Join(set, ",")
				return nil, nil
			}
			b, err := attr(a, sec, name)
			if err != nil {
				return nil, err
			}
			v, ok := c.named["value"].(bool)
			if !ok {
				return nil, errorf("Set-WebConfigurationProperty: %s expects $true or $false, got %v", name, c.named["value"])
			}
			*b = v
			return nil, nil
		}},
		"clear-webconfiguration": {params: params("PSPath", "Location", "Filter"), run: func(r *runner, c *call) ([]any, error) {
			a, sec, _, err := target(c)
			if err != nil {
				return nil, err
			}
			if !isProviders(sec) {
				return nil, errorf("test host: Clear-WebConfiguration is modeled for providers only")
			}
			a.Providers = nil
			return nil, nil
		}},
		"add-webconfigurationproperty": {params: params("PSPath", "Location", "Filter", "Name", "Value"), run: func(r *runner, c *call) ([]any, error) {
			a, sec, name, err := target(c)
			if err != nil {
				return nil, err
			}
			if !isProviders(sec) || name != "." {
				return nil, errorf("test host: Add-WebConfigurationProperty is modeled for -Filter .../providers -Name '.' only")
			}
			o, ok := c.named["value"].(*object)
			if !ok {
				return nil, errorf("Add-WebConfigurationProperty: -Value must be @{value='Provider'}")
			}
			pv, _ := o.get("value")
			p, _ := pv.(string)
			for _, have := range a.Providers {
				if strings.EqualFold(have, p) {
					return nil, errorf("Add-WebConfigurationProperty: Cannot add duplicate collection entry of type 'add' with unique key attribute 'value' set to '%s'", p)
				}
			}
			a.Providers = append(a.Providers, p)
			return nil, nil
		}},
	}
	for name, cm := range m {
		cm.run = h.wrapRun(name, cm.run)
		m[name] = cm
	}
	return m
}
