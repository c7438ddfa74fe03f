package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Meta keys the store keeps for itself, the same as the SQLite store's (so
// that `meshroot store migrate` copies them as they are). SetMeta refuses
// keys with internalKeyPrefix so that callers cannot overwrite them.
const (
	internalKeyPrefix = "store."
	keyBundleSequence = internalKeyPrefix + "bundle_sequence"
	keyAuditHeadSeq   = internalKeyPrefix + "audit_head_seq"
	keyAuditHeadHash  = internalKeyPrefix + "audit_head_hash"
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
	if key == "" {
		return errors.New("set meta: empty key")
	}
	if strings.HasPrefix(key, internalKeyPrefix) {
		return fmt.Errorf("set meta %q: keys starting with %q are reserved for the store: choose another key", key, internalKeyPrefix)
	}
	if err := setMeta(ctx, t.q, key, value); err != nil {
		return fmt.Errorf("set meta %q: %w", key, err)
	}
	return nil
}

// BundleSequence returns the trust bundle's sequence number (0 before the
// first change).
func (r reader) BundleSequence(ctx context.Context) (uint64, error) {
	n, err := bundleSequence(ctx, r.q)
	if err != nil {
		return 0, fmt.Errorf("get bundle sequence: %w", err)
	}
	return n, nil
}

// IncrementBundleSequence adds one to the bundle sequence and returns it.
func (t *tx) IncrementBundleSequence(ctx context.Context) (uint64, error) {
	n, err := bundleSequence(ctx, t.q)
	if err != nil {
		return 0, fmt.Errorf("increment bundle sequence: %w", err)
	}
	n++
	if err := setMeta(ctx, t.q, keyBundleSequence, strconv.FormatUint(n, 10)); err != nil {
		return 0, fmt.Errorf("increment bundle sequence: %w", err)
	}
	return n, nil
}

// bundleSequence reads the bundle sequence from meta.
func bundleSequence(ctx context.Context, q querier) (uint64, error) {
	v, err := getMeta(ctx, q, keyBundleSequence)
	if err != nil || v == "" {
		return 0, err
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stored bundle sequence %q is not a number: %w", v, err)
	}
	return n, nil
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
