package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/meshroot/meshroot/store"
)

const rootColumns = `id, trust_domain, state, key_ref, chain_pem, not_after, created_at, cross_pem, added_sequence, state_changed_at`

// GetRoot returns the root with id.
func (r reader) GetRoot(ctx context.Context, id string) (store.Root, error) {
	root, err := scanRoot(r.q.QueryRowContext(ctx, `SELECT `+rootColumns+` FROM roots WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Root{}, fmt.Errorf("root %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Root{}, fmt.Errorf("get root %q: %w", id, err)
	}
	return root, nil
}

// ListRoots returns all roots, oldest first.
func (r reader) ListRoots(ctx context.Context) ([]store.Root, error) {
	roots, err := listRows(ctx, r.q, scanRoot, `SELECT `+rootColumns+` FROM roots ORDER BY created_at, rowid`)
	if err != nil {
		return nil, fmt.Errorf("list roots: %w", err)
	}
	return roots, nil
}

// CreateRoot adds r. It fails with store.ErrAlreadyExists when a root with
// the same ID exists.
func (t *tx) CreateRoot(ctx context.Context, r store.Root) error {
	if r.ID == "" {
		return errors.New("create root: empty root id")
	}
	seq, err := bundleSequenceColumn(r.AddedSequence)
	if err != nil {
		return fmt.Errorf("create root %q: %w", r.ID, err)
	}
	_, err = t.q.ExecContext(ctx, `INSERT INTO roots (`+rootColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.TrustDomain, string(r.State), r.KeyRef, nonNil(r.ChainPEM), formatTime(r.NotAfter), formatTime(r.CreatedAt),
		nonNil(r.CrossPEM), seq, formatOptTime(r.StateChangedAt))
	switch {
	case isUniqueViolation(err):
		return fmt.Errorf("root %q: %w", r.ID, store.ErrAlreadyExists)
	case err != nil:
		return fmt.Errorf("create root %q: %w", r.ID, err)
	}
	return nil
}

// UpdateRootState moves the root with id from state from to state to. It
// is a single conditional UPDATE, so of two writers that read the same
// state (in this process or another) exactly one moves the root; the other
// gets store.ErrConflict. A missing root is store.ErrNotFound.
func (t *tx) UpdateRootState(ctx context.Context, id string, from, to store.RootState, at time.Time) error {
	res, err := t.q.ExecContext(ctx, `UPDATE roots SET state = ?, state_changed_at = ? WHERE id = ? AND state = ?`,
		string(to), formatOptTime(at), id, string(from))
	if err != nil {
		return fmt.Errorf("update root %q state: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("update root %q state: %w", id, err)
	}
	if n == 1 {
		return nil
	}
	// Nothing changed: tell a missing root from one in another state. The
	// UPDATE above decided; this read only picks the error.
	var cur string
	err = t.q.QueryRowContext(ctx, `SELECT state FROM roots WHERE id = ?`, id).Scan(&cur)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("root %q: %w", id, store.ErrNotFound)
	case err != nil:
		return fmt.Errorf("update root %q state: %w", id, err)
	}
	return fmt.Errorf("root %q is %s, not %s: %w", id, cur, from, store.ErrConflict)
}

// scanRoot reads a row of rootColumns.
func scanRoot(s scanner) (store.Root, error) {
	var (
		r                   store.Root
		state               string
		notAfter, createdAt string
		seq                 int64
		changedAt           string
	)
	if err := s.Scan(&r.ID, &r.TrustDomain, &state, &r.KeyRef, &r.ChainPEM, &notAfter, &createdAt, &r.CrossPEM, &seq, &changedAt); err != nil {
		return store.Root{}, err
	}
	if seq < 0 {
		return store.Root{}, fmt.Errorf("root %q: negative added_sequence %d", r.ID, seq)
	}
	r.AddedSequence = uint64(seq)
	if len(r.CrossPEM) == 0 {
		r.CrossPEM = nil
	}
	var terr error
	if r.StateChangedAt, terr = parseOptTime(changedAt); terr != nil {
		return store.Root{}, fmt.Errorf("root %q state_changed_at: %w", r.ID, terr)
	}
	r.State = store.RootState(state)
	var err error
	if r.NotAfter, err = parseTime(notAfter); err != nil {
		return store.Root{}, fmt.Errorf("root %q not_after: %w", r.ID, err)
	}
	if r.CreatedAt, err = parseTime(createdAt); err != nil {
		return store.Root{}, fmt.Errorf("root %q created_at: %w", r.ID, err)
	}
	return r, nil
}

// mustAffect returns a store.ErrNotFound error naming the kind and key of
// the record when res affected no row.
func mustAffect(res sql.Result, kind, key string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s %q: %w", kind, key, err)
	}
	if n == 0 {
		return fmt.Errorf("%s %q: %w", kind, key, store.ErrNotFound)
	}
	return nil
}
