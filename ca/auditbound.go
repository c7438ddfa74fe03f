package ca

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Bounds on what a refusal writes to the audit log. A refusal may be caused
// by anyone who can reach the server, so it must not let them choose how
// much is stored: a target (cluster name, serial) is at most MaxAuditTarget
// bytes and a reason at most MaxAuditReason, after escaping.
const (
	MaxAuditTarget = 128
	MaxAuditReason = 512
)

// BoundAuditText escapes s for the audit log and cuts it to at most max
// bytes (max >= 32). Control and other non-printable characters and
// invalid UTF-8 are written as Go escapes (\n, \x00, \u200b) and a
// backslash as \\, so that a row cannot forge line breaks or hide text; a
// cut is marked with the length of the original ("...[65536 bytes]"),
// never with its tail.
func BoundAuditText(s string, max int) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		var piece string
		switch {
		case r == utf8.RuneError && n <= 1:
			piece = fmt.Sprintf(`\x%02x`, s[i])
		case r == '\\':
			piece = `\\`
		case unicode.IsPrint(r):
			piece = s[i : i+n]
		default:
			piece = strings.Trim(fmt.Sprintf("%+q", r), "'")
		}
		if b.Len()+len(piece) > max {
			return cutAuditText(b.String(), len(s), max)
		}
		b.WriteString(piece)
		i += n
	}
	return b.String()
}

// cutAuditText shortens the escaped prefix so that it and the marker
// naming the original length fit in max bytes.
func cutAuditText(prefix string, origLen, max int) string {
	marker := fmt.Sprintf("...[%d bytes]", origLen)
	keep := max - len(marker)
	if keep < 0 {
		keep = 0
	}
	if keep < len(prefix) {
		prefix = prefix[:keep]
		// Do not leave half a rune or half an escape.
		for len(prefix) > 0 && !utf8.ValidString(prefix) {
			prefix = prefix[:len(prefix)-1]
		}
		if j := strings.LastIndexByte(prefix, '\\'); j >= 0 && j >= len(prefix)-6 {
			prefix = prefix[:j]
		}
	}
	return prefix + marker
}
