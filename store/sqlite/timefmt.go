package sqlite

import (
	"time"

	"github.com/meshroot/meshroot/store/internal/timetext"
)

// Times are stored in UTC as text in timetext.Layout, so they round-trip at
// the nanosecond and sort correctly as text; the PostgreSQL store writes
// them the same way.

// formatTime returns t as stored in the database.
func formatTime(t time.Time) string { return timetext.Format(t) }

// parseTime parses a time stored by formatTime.
func parseTime(s string) (time.Time, error) { return timetext.Parse(s) }

// formatOptTime is formatTime for columns where the zero time means "not
// set": it returns "" for the zero time. Since "" sorts before every
// formatted time, the zero time still compares as the earliest.
func formatOptTime(t time.Time) string { return timetext.FormatOpt(t) }

// parseOptTime parses a time stored by formatOptTime: "" is the zero time.
func parseOptTime(s string) (time.Time, error) { return timetext.ParseOpt(s) }
