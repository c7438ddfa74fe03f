package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/internal/metakv"
)

// Meta keys the store keeps for itself (package metakv; the same in every
// store, so that a copy between stores keeps them as they are).
const (
	keyAuditHeadSeq  = metakv.KeyAuditHeadSeq
	keyAuditHeadHash = metakv.KeyAuditHeadHash
)

// Meta returns the value of key ("" and no error when unset).
func (r reader) Meta(ctx context.Context, key string) (string, error) {
	v, err := getMeta(ctx, r.q, key)
	if err != nil {
		return "", fmt.Errorf("get meta %q: %w", key, err)
	}
	return v, nil
}

// SetMeta sets key to value. Keys starting with "store." are reserved for
// the store itself.
func (t *tx) SetMeta(ctx context.Context, key, value string) error {
	if err := metakv.CheckSetKey(key); err != nil {
		return err
	}
	if err := setMeta(ctx, t.q, key, value); err != nil {
		return fmt.Errorf("set meta %q: %w", key, err)
	}
	return nil
}

// BundleSequence returns the trust bundle's sequence number (0 before the
// first change).
func (r reader) BundleSequence(ctx context.Context) (uint64, error) {
	n, err := metakv.BundleSequence(ctx, kv{r.q})
	if err != nil {
		return 0, fmt.Errorf("get bundle sequence: %w", err)
	}
	return n, nil
}

// IncrementBundleSequence adds one to the bundle sequence and returns it.
func (t *tx) IncrementBundleSequence(ctx context.Context) (uint64, error) {
	return metakv.IncrementBundleSequence(ctx, kv{t.q})
}

// kv is the meta table through q, for package metakv.
type kv struct{ q querier }

func (m kv) Get(ctx context.Context, key string) (string, error) { return getMeta(ctx, m.q, key) }
func (m kv) Set(ctx context.Context, key, value string) error    { return setMeta(ctx, m.q, key, value) }

// auditHead reads the audit head from meta, both keys in one query (one
// round trip: an issuance's transaction holds the write lock through it).
func auditHead(ctx context.Context, q querier) (*store.AuditHead, error) {
	rows, err := q.Query(ctx, `SELECT key, value FROM meta WHERE key IN ($1, $2)`, keyAuditHeadSeq, keyAuditHeadHash)
	if err != nil {
		return nil, err
	}
	vals := readKV{}
	var k, v string
	if _, err := pgx.ForEachRow(rows, []any{&k, &v}, func() error { vals[k] = v; return nil }); err != nil {
		return nil, err
	}
	return metakv.AuditHead(ctx, vals)
}

// readKV is meta rows already read, for package metakv's readers.
type readKV map[string]string

func (m readKV) Get(_ context.Context, key string) (string, error) { return m[key], nil }
func (m readKV) Set(context.Context, string, string) error {
	return errors.New("postgres store: meta rows read for a reader cannot be set")
}

// getMeta returns the value of key, "" when unset.
func getMeta(ctx context.Context, q querier, key string) (string, error) {
	var v string
	err := q.QueryRow(ctx, `SELECT value FROM meta WHERE key = $1`, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return v, err
}

// setMeta inserts or replaces key.
func setMeta(ctx context.Context, q querier, key, value string) error {
	_, err := q.Exec(ctx,
		`INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
		key, value)
	return err
}
