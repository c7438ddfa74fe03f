package sqlite

import (
	"context"
	"database/sql"

	"github.com/meshroot/meshroot/store"
)

// querier is what *sql.DB and *sql.Tx have in common, so that the same
// queries run on the reader pool and inside a write transaction.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// reader implements every reader interface of package store on a querier.
type reader struct {
	q querier
}

// tx implements every reader and writer interface of package store on a
// write transaction.
type tx struct {
	reader
}

// asStore returns s as a store.Store: its readers on the reader pool.
func (s *Store) asStore() store.Store {
	return store.Store{Reader: s.reader.readers(), Updater: s, AuditVerifier: s, Closer: s}
}

// readers returns r as every concern's reader.
func (r *reader) readers() store.Reader {
	return store.Reader{
		RootReader: r, ClusterReader: r, JoinTokenReader: r, IntermediateReader: r,
		FederationReader: r, AuditReader: r, MetaReader: r, AdminCertReader: r, RevocationReader: r,
	}
}

// asTx returns t as the store.Tx that Update hands to its fn.
func (t *tx) asTx() store.Tx {
	return store.Tx{
		Reader:     t.reader.readers(),
		RootWriter: t, ClusterWriter: t, JoinTokenWriter: t, IntermediateWriter: t,
		FederationWriter: t, AuditWriter: t, MetaWriter: t, AdminCertWriter: t, RevocationWriter: t,
	}
}

// scanner is what *sql.Row and *sql.Rows have in common.
type scanner interface {
	Scan(dest ...any) error
}

// nonNil returns b, or an empty slice when b is nil, for NOT NULL blobs.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// listRows runs query and returns every row converted by scan.
func listRows[T any](ctx context.Context, q querier, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
