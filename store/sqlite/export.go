package sqlite

import (
	"context"
	"fmt"

	"github.com/meshroot/meshroot/store"
)

// CopiedTables are the tables that hold the store's state, in the order a
// copy must write them (referenced tables first). `meshroot store migrate`
// copies and counts them; schema_migrations is each store's own.
var CopiedTables = []string{"roots", "clusters", "intermediates", "join_tokens", "federation_peers", "admin_certs", "crls", "revocations", "quarantines", "meta", "audit_log"}

// OpenForCopy is Open, returning the SQLite store itself: a copy of the
// whole store (`meshroot store migrate`) needs the listings below, which are
// not part of store.Store.
func OpenForCopy(ctx context.Context, path string) (*Store, error) {
	return open(ctx, path)
}

// ListJoinTokens returns every join token ordered by ID, for a copy of the
// store.
func (s *Store) ListJoinTokens(ctx context.Context) ([]store.JoinToken, error) {
	tokens, err := listRows(ctx, s.r, scanJoinToken, `SELECT `+joinTokenColumns+` FROM join_tokens ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list join tokens: %w", err)
	}
	return tokens, nil
}

// ListMeta returns every meta key and value, the store's own keys (bundle
// sequence, audit head) included, for a copy of the store.
func (s *Store) ListMeta(ctx context.Context) (map[string]string, error) {
	type kv struct{ k, v string }
	rows, err := listRows(ctx, s.r, func(sc scanner) (kv, error) {
		var e kv
		return e, sc.Scan(&e.k, &e.v)
	}, `SELECT key, value FROM meta`)
	if err != nil {
		return nil, fmt.Errorf("list meta: %w", err)
	}
	m := make(map[string]string, len(rows))
	for _, e := range rows {
		m[e.k] = e.v
	}
	return m, nil
}

// TableCounts returns the number of rows of each of CopiedTables.
func (s *Store) TableCounts(ctx context.Context) (map[string]int64, error) {
	counts := make(map[string]int64, len(CopiedTables))
	for _, table := range CopiedTables {
		var n int64
		// table is one of CopiedTables, never input.
		if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil {
			return nil, fmt.Errorf("count rows of %s: %w", table, err)
		}
		counts[table] = n
	}
	return counts, nil
}
