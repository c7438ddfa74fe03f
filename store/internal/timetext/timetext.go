// Package timetext is how the stores write times as text: RFC 3339 in UTC
// with a fixed nine-digit fraction, so that times round-trip at the
// nanosecond (the audit chain hashes them at that precision) and sort
// correctly as text, byte by byte. The zero time, where a column means
// "not set", is the empty string, which sorts before every formatted time.
package timetext

import (
	"fmt"
	"time"
)

// Layout is RFC 3339 with a fixed nine-digit fraction (time.RFC3339Nano
// trims trailing zeros, which breaks text ordering).
const Layout = "2006-01-02T15:04:05.000000000Z07:00"

// Format returns t as stored.
func Format(t time.Time) string {
	return t.UTC().Format(Layout)
}

// Parse parses a time stored by Format.
func Parse(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("stored time %q is not RFC 3339: %w", s, err)
	}
	return t.UTC(), nil
}

// FormatOpt is Format for columns where the zero time means "not set": it
// returns "" for the zero time.
func FormatOpt(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return Format(t)
}

// ParseOpt parses a time stored by FormatOpt: "" is the zero time.
func ParseOpt(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return Parse(s)
}
