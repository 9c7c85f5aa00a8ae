package wsman

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/segkcd/segkcd/internal/ntlm"
)

// MS-WSMV 2.2.9.1: on plain HTTP, a message authenticated with NTLM
// travels sealed in a two-part MIME body. This is the exact layout
// Windows and pywinrm use (tabs, CRLFs and the unquoted boundary inside).

// EncryptedContentType is the Content-Type of a sealed WinRM message.
const EncryptedContentType = `multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";boundary="Encrypted Boundary"`

const (
	mimeBoundary = "--Encrypted Boundary"
	mimeEnd      = mimeBoundary + "--\r\n"
	mimeProtocol = "application/HTTP-SPNEGO-session-encrypted"
)

// ErrEncryption wraps every failure to unseal a message: a malformed body,
// a length that does not match, or a signature that does not verify.
var ErrEncryption = errors.New("wsman: encrypted message")

// SealMessage seals a SOAP message for the wire.
func SealMessage(s Sealer, msg []byte) ([]byte, error) {
	sealed, sig, err := s.Seal(msg)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(mimeBoundary + "\r\n")
	b.WriteString("\tContent-Type: " + mimeProtocol + "\r\n")
	b.WriteString("\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=" + strconv.Itoa(len(msg)) + "\r\n")
	b.WriteString(mimeBoundary + "\r\n")
	b.WriteString("\tContent-Type: application/octet-stream\r\n")
	b.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(sig))))
	b.Write(sig)
	b.Write(sealed)
	b.WriteString(mimeEnd)
	return b.Bytes(), nil
}

// IsEncrypted says whether a Content-Type is that of a sealed message.
func IsEncrypted(contentType string) bool {
	return strings.HasPrefix(strings.ToLower(contentType), "multipart/encrypted") &&
		strings.Contains(contentType, `protocol="`+mimeProtocol+`"`)
}

// UnsealMessage checks and decrypts a sealed body. The sealed part is
// exactly as long as the original (RC4 is a stream cipher), so it is cut
// by the declared Length, not by searching for the boundary, which could
// occur in ciphertext.
func UnsealMessage(s Sealer, body []byte) ([]byte, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrEncryption, fmt.Sprintf(format, a...))
	}
	rest, ok := bytes.CutPrefix(body, []byte(mimeBoundary+"\r\n"))
	if !ok {
		return nil, bad("no MIME boundary")
	}
	head, rest, ok := bytes.Cut(rest, []byte(mimeBoundary+"\r\n"))
	if !ok {
		return nil, bad("one MIME part, want two")
	}
	var length = -1
	for _, line := range strings.Split(string(head), "\r\n") {
		line = strings.TrimSpace(line)
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Content-Type") && !strings.EqualFold(strings.TrimSpace(v), mimeProtocol) {
			return nil, bad("protocol %q", strings.TrimSpace(v))
		}
		if _, v, ok := strings.Cut(line, "Length="); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n < 0 {
				return nil, bad("bad Length")
			}
			length = n
		}
	}
	if length < 0 {
		return nil, bad("no OriginalContent Length")
	}
	rest, ok = bytes.CutPrefix(rest, []byte("\tContent-Type: application/octet-stream\r\n"))
	if !ok {
		return nil, bad("second part is not application/octet-stream")
	}
	if len(rest) < 4 {
		return nil, bad("truncated")
	}
	sigLen := int(binary.LittleEndian.Uint32(rest))
	rest = rest[4:]
	// 16 bytes for NTLM, 60 for Kerberos AES; never more than a few hundred.
	if sigLen < ntlm.SignatureSize || sigLen > 1024 || len(rest) < sigLen || len(rest)-sigLen < length {
		return nil, bad("signature of %d bytes, or the body is shorter than its Length", sigLen)
	}
	sig, sealed, trailer := rest[:sigLen], rest[sigLen:sigLen+length], rest[sigLen+length:]
	if string(trailer) != mimeEnd {
		return nil, bad("body does not end with the closing boundary (Length does not match)")
	}
	msg, err := s.Unseal(sealed, sig)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEncryption, err)
	}
	return msg, nil
}
