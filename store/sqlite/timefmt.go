package sqlite

import (
	"fmt"
	"time"
)

// timeLayout is RFC 3339 with a fixed nine-digit fraction. Times are stored
// in UTC in this layout, so they round-trip at the nanosecond and sort
// correctly as text (time.RFC3339Nano trims trailing zeros, which breaks
// text ordering).
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// formatTime returns t as stored in the database.
func formatTime(t time.Time) string {
	return t.UTC().Format(timeLayout)
}

// parseTime parses a time stored by formatTime.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("stored time %q is not RFC 3339: %w", s, err)
	}
	return t.UTC(), nil
}

// formatOptTime is formatTime for columns where the zero time means "not
// set": it returns "" for the zero time. Since "" sorts before every
// formatted time, the zero time still compares as the earliest.
func formatOptTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return formatTime(t)
}

// parseOptTime parses a time stored by formatOptTime: "" is the zero time.
func parseOptTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return parseTime(s)
}
