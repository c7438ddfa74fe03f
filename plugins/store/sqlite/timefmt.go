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
