package winrstest

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// This is a deliberately small PowerShell: the syntax segkcd's scripts use,
// with PowerShell's own rules for what it covers, and a loud error for the
// rest, so a test cannot pass on a script Windows would refuse or read
// differently.
//
//	statement  := '$'name '=' pipeline | pipeline
//	pipeline   := element ('|' command)*
//	element    := command | expr
//	command    := name arg* | '&' expr
//	arg        := '-'param [expr] | expr
//	expr       := 'single-quoted' | $var | $env:VAR | number
//	            | '@(' statements ')' | '(' pipeline ')' | '@{' key '=' expr (';' key '=' expr)* '}'
//	            | '[pscustomobject]' hashtable | '[Console]::In.ReadLine()'

type tokKind int

const (
	tEOF tokKind = iota
	tSep         // newline or ;
	tPipe
	tAssign
	tLParen  // (
	tAtParen // @(
	tAtBrace // @{
	tRParen  // )
	tRBrace  // }
	tString  // single-quoted, value unquoted
	tVar     // $name, value without $
	tParam   // -Name, value without -
	tWord    // command names, barewords, numbers
	tType    // [pscustomobject], value inside brackets
	tAmp     // &
	tComma   // ,
	tStdin   // [Console]::In.ReadLine()
)

// stdinCall follows [Console] in the one static member call the model knows.
const stdinCall = "::In.ReadLine()"

type token struct {
	kind tokKind
	val  string
}

// singleQuotes are what PowerShell's tokenizer takes as a single quote.
const singleQuotes = "'\u2018\u2019\u201a\u201b"

func isQuote(r rune) bool { return strings.ContainsRune(singleQuotes, r) }

// tokenize splits a script; double-quoted strings, backticks, script
// blocks and the like are refused: segkcd never emits them.
func tokenize(src string) ([]token, error) {
	var toks []token
	rs := []rune(src)
	for i := 0; i < len(rs); {
		r := rs[i]
		switch {
		case r == '\n' || r == ';':
			toks = append(toks, token{tSep, ""})
			i++
		case r == '\r' || r == ' ' || r == '\t':
			i++
		case r == '#':
			for i < len(rs) && rs[i] != '\n' {
				i++
			}
		case r == '|':
			toks = append(toks, token{tPipe, ""})
			i++
		case r == '=':
			toks = append(toks, token{tAssign, ""})
			i++
		case r == '&':
			toks = append(toks, token{tAmp, ""})
			i++
		case r == ',':
			toks = append(toks, token{tComma, ""})
			i++
		case r == '(':
			toks = append(toks, token{tLParen, ""})
			i++
		case r == ')':
			toks = append(toks, token{tRParen, ""})
			i++
		case r == '}':
			toks = append(toks, token{tRBrace, ""})
			i++
		case r == '@' && i+1 < len(rs) && rs[i+1] == '(':
			toks = append(toks, token{tAtParen, ""})
			i += 2
		case r == '@' && i+1 < len(rs) && rs[i+1] == '{':
			toks = append(toks, token{tAtBrace, ""})
			i += 2
		case isQuote(r):
			// A quote ends the string unless the next character is a quote too
			// (any of the five, as in PowerShell), which stands for one.
			var b strings.Builder
			i++
			closed := false
			for i < len(rs) {
				if isQuote(rs[i]) {
					if i+1 < len(rs) && isQuote(rs[i+1]) {
						b.WriteRune(rs[i])
						i += 2
						continue
					}
					i++
					closed = true
					break
				}
				b.WriteRune(rs[i])
				i++
			}
			if !closed {
				return nil, fmt.Errorf("unterminated string")
			}
			toks = append(toks, token{tString, b.String()})
		case r == '$':
			j := i + 1
			for j < len(rs) && (isWordRune(rs[j]) || rs[j] == ':') {
				j++
			}
			if j == i+1 {
				return nil, fmt.Errorf("bare $ at %d", i)
			}
			toks = append(toks, token{tVar, string(rs[i+1 : j])})
			i = j
		case r == '[':
			j := i + 1
			for j < len(rs) && rs[j] != ']' {
				j++
			}
			if j == len(rs) {
				return nil, fmt.Errorf("unterminated type literal")
			}
			// [Console]::In.ReadLine() reads a line of the command's standard
			// input (how secrets arrive); no other static member is modeled.
			if rest := string(rs[j+1:]); strings.EqualFold(string(rs[i+1:j]), "console") && strings.HasPrefix(rest, stdinCall) {
				toks = append(toks, token{tStdin, stdinCall})
				i = j + 1 + len([]rune(stdinCall))
				break
			}
			toks = append(toks, token{tType, strings.ToLower(string(rs[i+1 : j]))})
			i = j + 1
		case r == '-' && i+1 < len(rs) && unicode.IsLetter(rs[i+1]):
			j := i + 1
			for j < len(rs) && isWordRune(rs[j]) {
				j++
			}
			toks = append(toks, token{tParam, string(rs[i+1 : j])})
			i = j
		case isWordRune(r) || r == '.' || r == '\\':
			j := i
			for j < len(rs) && (isWordRune(rs[j]) || rs[j] == '-' || rs[j] == '.' || rs[j] == '\\' || rs[j] == ':') {
				j++
			}
			toks = append(toks, token{tWord, string(rs[i:j])})
			i = j
		default:
			return nil, fmt.Errorf("the test host does not model %q (at %d)", r, i)
		}
	}
	return append(toks, token{tEOF, ""}), nil
}

func isWordRune(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' }

// AST.
type (
	statement struct {
		assign string // variable name, or ""
		pipe   pipeline
	}
	pipeline []element
	element  struct {
		cmd  *command
		expr expr
	}
	command struct {
		name string // "&" for the call operator
		args []arg
		call expr // for &
	}
	arg struct {
		param string // "" for a positional argument
		value expr   // nil for a switch
	}
	expr    interface{}
	strLit  string
	varRef  string
	numLit  float64
	arrayEx []statement
	subEx   pipeline
	hashEx  []kv
	kv      struct {
		key   string
		value expr
	}
	objEx   hashEx   // [pscustomobject]@{...}
	stdinEx struct{} // [Console]::In.ReadLine()
	listEx  []expr   // a, b (an argument list)
)

type parser struct {
	toks []token
	pos  int
}

func (p *parser) peek() token { return p.toks[p.pos] }
func (p *parser) next() token { t := p.toks[p.pos]; p.pos++; return t }

func parse(src string) ([]statement, error) {
	toks, err := tokenize(src)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	sts, err := p.statements(tEOF)
	if err != nil {
		return nil, err
	}
	if p.peek().kind != tEOF {
		return nil, fmt.Errorf("unexpected token after script")
	}
	return sts, nil
}

func (p *parser) statements(end tokKind) ([]statement, error) {
	var sts []statement
	for {
		for p.peek().kind == tSep {
			p.next()
		}
		if k := p.peek().kind; k == end || k == tEOF {
			return sts, nil
		}
		st, err := p.statement()
		if err != nil {
			return nil, err
		}
		sts = append(sts, st)
		if k := p.peek().kind; k != tSep && k != end && k != tEOF {
			return nil, fmt.Errorf("expected end of statement, got %q", p.peek().val)
		}
	}
}

func (p *parser) statement() (statement, error) {
	if p.peek().kind == tVar && p.toks[p.pos+1].kind == tAssign {
		name := p.next().val
		p.next()
		pl, err := p.pipeline()
		return statement{assign: name, pipe: pl}, err
	}
	pl, err := p.pipeline()
	return statement{pipe: pl}, err
}

func (p *parser) pipeline() (pipeline, error) {
	var pl pipeline
	first := true
	for {
		var el element
		switch t := p.peek(); {
		case t.kind == tWord && !isNumber(t.val) || t.kind == tAmp:
			c, err := p.command()
			if err != nil {
				return nil, err
			}
			el.cmd = c
		case first:
			e, err := p.expr()
			if err != nil {
				return nil, err
			}
			el.expr = e
		default:
			return nil, fmt.Errorf("expected a command after |")
		}
		pl = append(pl, el)
		first = false
		if p.peek().kind != tPipe {
			return pl, nil
		}
		p.next()
	}
}

func (p *parser) command() (*command, error) {
	t := p.next()
	c := &command{name: t.val}
	if t.kind == tAmp {
		c.name = "&"
		e, err := p.expr()
		if err != nil {
			return nil, err
		}
		c.call = e
	}
	for {
		switch t := p.peek(); t.kind {
		case tParam:
			p.next()
			a := arg{param: t.val}
			if k := p.peek().kind; k != tParam && k != tPipe && k != tSep && k != tEOF && k != tRParen && k != tRBrace {
				e, err := p.listOrExpr()
				if err != nil {
					return nil, err
				}
				a.value = e
			}
			c.args = append(c.args, a)
		case tString, tVar, tWord, tLParen, tAtParen, tAtBrace, tType:
			e, err := p.expr()
			if err != nil {
				return nil, err
			}
			c.args = append(c.args, arg{value: e})
		default:
			return c, nil
		}
	}
}

// listOrExpr reads an argument that may be a comma list: -ArgumentList $a, $b.
func (p *parser) listOrExpr() (expr, error) {
	e, err := p.expr()
	if err != nil || p.peek().kind != tComma {
		return e, err
	}
	list := listEx{e}
	for p.peek().kind == tComma {
		p.next()
		e, err := p.expr()
		if err != nil {
			return nil, err
		}
		list = append(list, e)
	}
	return list, nil
}

func isNumber(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}

func (p *parser) expr() (expr, error) {
	t := p.next()
	switch t.kind {
	case tString:
		return strLit(t.val), nil
	case tVar:
		return varRef(t.val), nil
	case tWord:
		if f, err := strconv.ParseFloat(t.val, 64); err == nil {
			return numLit(f), nil
		}
		return strLit(t.val), nil // a bareword argument is a string in command mode
	case tAtParen:
		sts, err := p.statements(tRParen)
		if err != nil {
			return nil, err
		}
		if p.next().kind != tRParen {
			return nil, fmt.Errorf("missing ) of @(")
		}
		return arrayEx(sts), nil
	case tLParen:
		pl, err := p.pipeline()
		if err != nil {
			return nil, err
		}
		if p.next().kind != tRParen {
			return nil, fmt.Errorf("missing )")
		}
		return subEx(pl), nil
	case tAtBrace:
		return p.hashtable()
	case tStdin:
		return stdinEx{}, nil
	case tType:
		if t.val != "pscustomobject" {
			return nil, fmt.Errorf("the test host does not model the type [%s]", t.val)
		}
		if p.next().kind != tAtBrace {
			return nil, fmt.Errorf("[pscustomobject] without @{")
		}
		h, err := p.hashtable()
		if err != nil {
			return nil, err
		}
		return objEx(h.(hashEx)), nil
	}
	return nil, fmt.Errorf("unexpected token %q", t.val)
}

func (p *parser) hashtable() (expr, error) {
	var h hashEx
	for {
		for p.peek().kind == tSep {
			p.next()
		}
		if p.peek().kind == tRBrace {
			p.next()
			return h, nil
		}
		k := p.next()
		if k.kind != tWord && k.kind != tString {
			return nil, fmt.Errorf("hashtable key expected")
		}
		if p.next().kind != tAssign {
			return nil, fmt.Errorf("= expected after hashtable key %q", k.val)
		}
		v, err := p.expr()
		if err != nil {
			return nil, err
		}
		h = append(h, kv{k.val, v})
	}
}
