package postgres

import (
	"context"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshroot/meshroot/store"
)

// querier is what a connection in a transaction and the pool have in
// common, so that the same queries run in autocommit and inside Update.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// reader implements every reader interface of package store on a querier.
type reader struct {
	q querier
}

// tx implements every reader and writer interface of package store on a
// connection inside a transaction.
type tx struct {
	reader
	// head, when set, caches the audit head for the transaction.
	head *headCache
}

// headCache is the audit head as a write transaction left it: the write
// lock it holds keeps every other writer from moving the head until it
// ends, so appends after the first need not read it again (one round trip
// less per issuance under the lock). In a group commit batch, saved is
// the head as of the last savepoint and cur the head including the running
// fn's appends; nil means unknown (read it).
type headCache struct {
	saved, cur *store.AuditHead
}

// release keeps the running fn's appends (its savepoint was released).
func (h *headCache) release() { h.saved = h.cur }

// rollback forgets them (rolled back to the savepoint).
func (h *headCache) rollback() { h.cur = h.saved }

// asStore returns s as a store.Store: its readers on the pool, in
// autocommit.
func (s *Store) asStore() store.Store {
	return store.Store{Reader: s.reader.readers(), Updater: s, AuditVerifier: s, Closer: s}
}

// readers returns r as every concern's reader.
func (r reader) readers() store.Reader {
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

// scanner is what pgx.Row and pgx.Rows have in common.
type scanner interface {
	Scan(dest ...any) error
}

// poolQuerier runs statements on the pool, each in autocommit, marking
// errors that mean a lost connection as store.ErrRetryable (a read can
// always be retried).
type poolQuerier struct{ p *pgxpool.Pool }

func (q poolQuerier) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	tag, err := q.p.Exec(ctx, sql, args...)
	return tag, markLost(err)
}

func (q poolQuerier) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	rows, err := q.p.Query(ctx, sql, args...)
	if err != nil {
		return nil, markLost(err)
	}
	return lostRows{rows}, nil
}

func (q poolQuerier) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return lostRow{q.p.QueryRow(ctx, sql, args...)}
}

type lostRows struct{ pgx.Rows }

func (r lostRows) Err() error { return markLost(r.Rows.Err()) }

type lostRow struct{ pgx.Row }

func (r lostRow) Scan(dest ...any) error { return markLost(r.Row.Scan(dest...)) }

// markLost wraps err with store.ErrRetryable when it means a lost
// connection.
func markLost(err error) error {
	if isConnectionLoss(err) {
		return fmt.Errorf("%w (the connection to the database was lost: %w)", err, store.ErrRetryable)
	}
	return err
}

// listRows runs query and returns every row converted by scan.
func listRows[T any](ctx context.Context, q querier, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.Query(ctx, query, args...)
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

// affected returns a store.ErrNotFound error naming the kind and key of the
// record when tag reports no row changed.
func affected(tag pgconn.CommandTag, kind, key string) error {
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s %q: %w", kind, key, store.ErrNotFound)
	}
	return nil
}

// nonNil returns b, or an empty slice when b is nil, for NOT NULL columns.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// sequenceColumn returns n as stored in a BIGINT column.
func sequenceColumn(n uint64) (int64, error) {
	if n > math.MaxInt64 {
		return 0, fmt.Errorf("sequence %d is larger than the largest storable value %d", n, int64(math.MaxInt64))
	}
	return int64(n), nil
}

// sequenceValue checks a stored sequence.
func sequenceValue(what string, n int64) (uint64, error) {
	if n < 0 {
		return 0, fmt.Errorf("%s: stored value %d is negative", what, n)
	}
	return uint64(n), nil
}
