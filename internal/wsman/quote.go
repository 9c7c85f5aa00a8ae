// Package wsman holds the parts of WinRM's wire protocol that the winrs
// client and its test host (winrs/winrstest) both speak: PowerShell
// quoting and encoded command lines, staging of long scripts, CLIXML error
// streams, and message sealing on plain HTTP (MS-WSMV 2.2.9.1) with its
// NTLM session and TLS channel binding.
package wsman

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/unicode"
)

// singleQuotes are the characters PowerShell's tokenizer takes as a single
// quote: the ASCII one and the Unicode left, right, low-9 and reversed-9
// quotation marks. Each must be doubled inside a single-quoted string, or
// a value holding one ends the string and what follows runs as code.
const singleQuotes = "'\u2018\u2019\u201a\u201b"

// ErrUnquotable: the value holds a NUL or invalid UTF-8, which no
// PowerShell literal can carry faithfully.
var ErrUnquotable = errors.New("wsman: value holds a NUL character or invalid UTF-8")

// Quote returns s as a PowerShell single-quoted string literal, in which
// nothing is expanded: no $variables, no subexpressions, no escapes.
func Quote(s string) (string, error) {
	if strings.ContainsRune(s, 0) || !utf8.ValidString(s) {
		return "", ErrUnquotable
	}
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('\'')
	for _, r := range s {
		b.WriteRune(r)
		if strings.ContainsRune(singleQuotes, r) {
			b.WriteRune(r)
		}
	}
	b.WriteByte('\'')
	return b.String(), nil
}

// MustQuote is Quote for values the caller produced itself (constants,
// validated names); it panics on a NUL or invalid UTF-8.
func MustQuote(s string) string {
	q, err := Quote(s)
	if err != nil {
		panic(err)
	}
	return q
}

// EncodeCommand is the -EncodedCommand argument: base64 of UTF-16LE.
func EncodeCommand(script string) string {
	enc := unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM).NewEncoder()
	b, _ := enc.Bytes([]byte(script)) // valid UTF-8 in, by construction of scripts
	return base64.StdEncoding.EncodeToString(b)
}

// DecodeCommand reverses EncodeCommand (the test host uses it).
func DecodeCommand(arg string) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(arg)
	if err != nil {
		return "", err
	}
	dec := unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM).NewDecoder()
	out, err := dec.Bytes(raw)
	return string(out), err
}

// PowerShell is the program and options every command line starts with.
const PowerShell = "powershell.exe -NoLogo -NoProfile -NonInteractive -ExecutionPolicy Bypass"

// stop makes every error terminate: without it a failing cmdlet lets
// powershell.exe exit 0, and a half-staged script would pass for a success.
const stop = "$ErrorActionPreference = 'Stop'; "

// MaxCommandLine is what cmd.exe passes on; longer lines are cut silently.
const MaxCommandLine = 8191

// CommandLine is the single command that runs script.
func CommandLine(script string) string {
	return PowerShell + " -EncodedCommand " + EncodeCommand(script)
}

// Stage splits a script whose command line would pass MaxCommandLine into
// commands: each appends a quoted piece of the script to a .ps1 file in
// the temp directory, the next-to-last runs the file, the last removes it.
// A short script is one command.
func Stage(script string) ([]string, error) {
	if line := CommandLine(script); len(line) <= MaxCommandLine {
		return []string{line}, nil
	}
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	target := "(Join-Path $env:TEMP " + MustQuote("segkcd-"+hex.EncodeToString(id)+".ps1") + ")"
	var cmds []string
	rest := []rune(script)
	for len(rest) > 0 {
		// The largest piece whose command fits; shrink until it does.
		n := len(rest)
		if n > 2400 {
			n = 2400
		}
		for {
			piece, err := Quote(string(rest[:n]))
			if err != nil {
				return nil, err
			}
			line := CommandLine(stop + "Add-Content -LiteralPath " + target + " -Value " + piece + " -NoNewline -Encoding UTF8")
			if len(line) <= MaxCommandLine {
				cmds = append(cmds, line)
				rest = rest[n:]
				break
			}
			n = n * 3 / 4
		}
	}
	cmds = append(cmds, CommandLine(stop+"& "+target), CommandLine(stop+"Remove-Item -LiteralPath "+target+" -Force"))
	return cmds, nil
}

// Redact replaces each secret, and its PowerShell-quoted form, with
// [REDACTED]: PowerShell's error records quote the failing line.
func Redact(s string, secrets ...string) string {
	for _, sec := range secrets {
		if sec == "" {
			continue
		}
		if q, err := Quote(sec); err == nil {
			s = strings.ReplaceAll(s, q[1:len(q)-1], "[REDACTED]")
		}
		s = strings.ReplaceAll(s, sec, "[REDACTED]")
	}
	return s
}
