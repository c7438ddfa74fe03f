// Package rowscan holds what both stores use to scan their rows.
package rowscan

// Row is a result row: a *sql.Row, a pgx.Row.
type Row interface {
	Scan(dest ...any) error
}

// WithExtra is a row whose columns are those a scan function reads,
// followed by Extra's: a query that joins a column to a table's usual
// ones is scanned by that table's own scan function.
type WithExtra struct {
	Row   Row
	Extra []any
}

// Scan scans dest, then Extra.
func (w WithExtra) Scan(dest ...any) error {
	return w.Row.Scan(append(dest, w.Extra...)...)
}
