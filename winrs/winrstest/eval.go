package winrstest

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// object is a PSCustomObject: keys keep their order, as PowerShell's do.
type object struct {
	keys []string
	vals map[string]any
}

func newObject(kv ...any) *object {
	o := &object{vals: map[string]any{}}
	for i := 0; i+1 < len(kv); i += 2 {
		o.set(kv[i].(string), kv[i+1])
	}
	return o
}

func (o *object) set(k string, v any) {
	if _, ok := o.vals[k]; !ok {
		o.keys = append(o.keys, k)
	}
	o.vals[k] = v
}

// get reads a property case-insensitively, as PowerShell does.
func (o *object) get(k string) (any, bool) {
	for _, key := range o.keys {
		if strings.EqualFold(key, k) {
			return o.vals[key], true
		}
	}
	return nil, false
}

// psError is a terminating error, reported like PowerShell does.
type psError struct{ msg string }

func (e *psError) Error() string { return e.msg }

func errorf(format string, a ...any) error { return &psError{fmt.Sprintf(format, a...)} }

// call is one cmdlet invocation after parameter binding.
type call struct {
	name       string
	named      map[string]any // lower-case parameter name -> value
	switches   map[string]bool
	positional []any
	input      []any
}

func (c *call) str(param string) (string, bool) {
	v, ok := c.named[param]
	if !ok {
		return "", false
	}
	s, isStr := v.(string)
	return s, isStr
}

// mustStr is a required string parameter.
func (c *call) mustStr(param string) (string, error) {
	s, ok := c.str(param)
	if !ok {
		return "", errorf("%s: parameter -%s is required and must be a string", c.name, param)
	}
	return s, nil
}

// cmdlet is a modeled command: its parameters (lower case; switches marked)
// and what it does.
type cmdlet struct {
	params map[string]bool // name -> is switch
	run    func(r *runner, c *call) ([]any, error)
	maxPos int // positional arguments allowed
}

type runner struct {
	h     *Host
	vars  map[string]any
	out   []any
	stdin []string // the command's standard input, by line
	// stop ends a running command (WinRS Signal terminate); nil when the
	// script runs outside a command.
	stop <-chan struct{}
	// stopSet: the script set $ErrorActionPreference = 'Stop' before any command.
	stopSet bool
}

func (r *runner) exec(sts []statement) error {
	for _, st := range sts {
		if st.assign != "" && len(st.pipe) == 1 && st.pipe[0].expr != nil {
			// $x = <expression> keeps the value as it is (an @() stays an
			// array); only pipeline output is collected and unrolled.
			v, err := r.eval(st.pipe[0].expr)
			if err != nil {
				return err
			}
			r.assign(st.assign, v)
			continue
		}
		vals, err := r.pipeline(st.pipe)
		if err != nil {
			return err
		}
		if st.assign != "" {
			r.assign(st.assign, collapse(vals))
			continue
		}
		r.out = append(r.out, vals...)
	}
	return nil
}

func (r *runner) assign(name string, v any) {
	if strings.EqualFold(name, "ErrorActionPreference") {
		r.stopSet = v == "Stop"
	}
	r.vars[strings.ToLower(name)] = v
}

// collapse is what PowerShell assigns: nothing -> $null, one -> it, more -> array.
func collapse(vals []any) any {
	switch len(vals) {
	case 0:
		return nil
	case 1:
		return vals[0]
	}
	return vals
}

func unroll(v any) []any {
	if a, ok := v.([]any); ok {
		return a
	}
	if v == nil {
		return nil
	}
	return []any{v}
}

func (r *runner) pipeline(pl pipeline) ([]any, error) {
	var stream []any
	for i, el := range pl {
		if el.expr != nil {
			v, err := r.eval(el.expr)
			if err != nil {
				return nil, err
			}
			stream = unroll(v)
			continue
		}
		out, err := r.command(el.cmd, stream, i > 0)
		if err != nil {
			return nil, err
		}
		stream = out
	}
	return stream, nil
}

func (r *runner) command(c *command, input []any, piped bool) ([]any, error) {
	if c.name == "&" {
		target, err := r.eval(c.call)
		if err != nil {
			return nil, err
		}
		path, _ := target.(string)
		src, ok := r.h.readFile(path)
		if !ok {
			return nil, errorf("The term '%s' is not recognized as the name of a cmdlet, function, script file, or operable program.", path)
		}
		sts, err := parse(src)
		if err != nil {
			return nil, errorf("ParserError: %v", err)
		}
		sub := &runner{h: r.h, vars: map[string]any{}, stopSet: r.stopSet, stdin: r.stdin, stop: r.stop}
		defer func() { r.stdin = sub.stdin }()
		err = sub.exec(sts)
		r.out = append(r.out, sub.out...)
		return nil, err
	}
	cm, ok := r.h.cmdlets[strings.ToLower(c.name)]
	if !ok {
		return nil, errorf("The term '%s' is not recognized as the name of a cmdlet, function, script file, or operable program. (the segkcd test host models only the commands segkcd emits)", c.name)
	}
	if !r.stopSet && !strings.EqualFold(c.name, "Import-Module") {
		return nil, errorf("test host: the script runs %s before setting $ErrorActionPreference = 'Stop'; errors would not stop it on Windows", c.name)
	}
	k := &call{name: c.name, named: map[string]any{}, switches: map[string]bool{}, input: input}
	for _, a := range c.args {
		if a.param == "" {
			v, err := r.eval(a.value)
			if err != nil {
				return nil, err
			}
			k.positional = append(k.positional, v)
			continue
		}
		p := strings.ToLower(a.param)
		isSwitch, known := cm.params[p]
		if !known {
			return nil, errorf("%s: A parameter cannot be found that matches parameter name '%s'.", c.name, a.param)
		}
		if isSwitch {
			if a.value != nil {
				return nil, errorf("%s: -%s is a switch and takes no value here", c.name, a.param)
			}
			k.switches[p] = true
			continue
		}
		if a.value == nil {
			return nil, errorf("%s: Missing an argument for parameter '%s'.", c.name, a.param)
		}
		v, err := r.eval(a.value)
		if err != nil {
			return nil, err
		}
		k.named[p] = v
	}
	if len(k.positional) > cm.maxPos {
		return nil, errorf("%s: A positional parameter cannot be found that accepts argument '%v'.", c.name, k.positional[len(k.positional)-1])
	}
	return cm.run(r, k)
}

func (r *runner) eval(e expr) (any, error) {
	switch e := e.(type) {
	case stdinEx:
		if len(r.stdin) == 0 {
			return nil, nil // end of input: ReadLine gives $null
		}
		line := r.stdin[0]
		r.stdin = r.stdin[1:]
		return line, nil
	case strLit:
		return string(e), nil
	case numLit:
		return float64(e), nil
	case varRef:
		name := strings.ToLower(string(e))
		switch name {
		case "true":
			return true, nil
		case "false":
			return false, nil
		case "null":
			return nil, nil
		}
		if env, ok := strings.CutPrefix(name, "env:"); ok {
			if v, ok := r.h.env[env]; ok {
				return v, nil
			}
			return nil, nil
		}
		v, ok := r.vars[name]
		if !ok {
			return nil, errorf("test host: variable $%s is used before it is set", string(e))
		}
		return v, nil
	case arrayEx:
		sub := &runner{h: r.h, vars: r.vars, stopSet: r.stopSet, stdin: r.stdin, stop: r.stop}
		defer func() { r.stdin = sub.stdin }()
		if err := sub.exec([]statement(e)); err != nil {
			return nil, err
		}
		out := sub.out
		if out == nil {
			out = []any{}
		}
		return out, nil
	case subEx:
		vals, err := r.pipeline(pipeline(e))
		if err != nil {
			return nil, err
		}
		return collapse(vals), nil
	case hashEx:
		o := newObject()
		for _, p := range e {
			v, err := r.eval(p.value)
			if err != nil {
				return nil, err
			}
			o.set(p.key, v)
		}
		return o, nil
	case objEx:
		return r.eval(hashEx(e))
	case listEx:
		out := make([]any, len(e))
		for i, x := range e {
			v, err := r.eval(x)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	}
	return nil, errorf("test host: cannot evaluate %T", e)
}

// toJSON renders a value as ConvertTo-Json -Compress would.
func toJSON(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return strconv.FormatBool(v)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case int:
		return strconv.Itoa(v)
	case string:
		b, _ := json.Marshal(v)
		return string(b)
	case []any:
		parts := make([]string, len(v))
		for i, x := range v {
			parts[i] = toJSON(x)
		}
		return "[" + strings.Join(parts, ",") + "]"
	case []string:
		parts := make([]string, len(v))
		for i, x := range v {
			parts[i] = toJSON(x)
		}
		return "[" + strings.Join(parts, ",") + "]"
	case time.Time:
		return `"\/Date(` + strconv.FormatInt(v.UnixMilli(), 10) + `)\/"` // as PowerShell 5.1 writes a DateTime
	case *psCredential:
		return `{"UserName":` + toJSON(v.user) + `,"Password":"System.Security.SecureString"}`
	case *secureString:
		return `"System.Security.SecureString"`
	case *object:
		parts := make([]string, len(v.keys))
		for i, k := range v.keys {
			kb, _ := json.Marshal(k)
			parts[i] = string(kb) + ":" + toJSON(v.vals[k])
		}
		return "{" + strings.Join(parts, ",") + "}"
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		o := newObject()
		for _, k := range keys {
			o.set(k, v[k])
		}
		return toJSON(o)
	}
	b, _ := json.Marshal(fmt.Sprint(v))
	return string(b)
}

// clixml renders an error as powershell.exe writes it to stderr.
func clixml(msg string) string {
	var b strings.Builder
	b.WriteString("#< CLIXML\r\n<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\"><S S=\"Error\">")
	for _, r := range msg + "\r\n" {
		switch r {
		case '\r':
			b.WriteString("_x000D_")
		case '\n':
			b.WriteString("_x000A_")
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '&':
			b.WriteString("&amp;")
		default:
			b.WriteRune(r)
		}
	}
	b.WriteString("</S></Objs>")
	return b.String()
}
