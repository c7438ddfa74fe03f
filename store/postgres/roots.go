package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/internal/timetext"
)

const rootColumns = `id, trust_domain, state, key_ref, chain_pem, not_after, created_at, cross_pem, added_sequence, state_changed_at`

// GetRoot returns the root with id.
func (r reader) GetRoot(ctx context.Context, id string) (store.Root, error) {
	root, err := scanRoot(r.q.QueryRow(ctx, `SELECT `+rootColumns+` FROM roots WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Root{}, fmt.Errorf("root %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Root{}, fmt.Errorf("get root %q: %w", id, err)
	}
	return root, nil
}

// ListRoots returns all roots, oldest first.
func (r reader) ListRoots(ctx context.Context) ([]store.Root, error) {
	roots, err := listRows(ctx, r.q, scanRoot, `SELECT `+rootColumns+` FROM roots ORDER BY created_at, ord`)
	if err != nil {
		return nil, fmt.Errorf("list roots: %w", err)
	}
	return roots, nil
}

// CreateRoot adds r. It fails with store.ErrAlreadyExists when a root with
// the same ID exists; the transaction goes on (no statement failed).
func (t *tx) CreateRoot(ctx context.Context, r store.Root) error {
	if r.ID == "" {
		return errors.New("create root: empty root id")
	}
	seq, err := sequenceColumn(r.AddedSequence)
	if err != nil {
		return fmt.Errorf("create root %q: added sequence: %w", r.ID, err)
	}
	tag, err := t.q.Exec(ctx, `INSERT INTO roots (`+rootColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING`,
		r.ID, r.TrustDomain, string(r.State), r.KeyRef, nonNil(r.ChainPEM), timetext.Format(r.NotAfter), timetext.Format(r.CreatedAt),
		nonNil(r.CrossPEM), seq, timetext.FormatOpt(r.StateChangedAt))
	switch {
	case err != nil:
		return fmt.Errorf("create root %q: %w", r.ID, err)
	case tag.RowsAffected() == 0:
		return fmt.Errorf("root %q: %w", r.ID, store.ErrAlreadyExists)
	}
	return nil
}

// UpdateRootState moves the root with id from state from to state to in one
// conditional UPDATE: of two writers that read the same state exactly one
// moves the root; the other gets store.ErrConflict. A missing root is
// store.ErrNotFound.
func (t *tx) UpdateRootState(ctx context.Context, id string, from, to store.RootState, at time.Time) error {
	tag, err := t.q.Exec(ctx, `UPDATE roots SET state = $1, state_changed_at = $2 WHERE id = $3 AND state = $4`,
		string(to), timetext.FormatOpt(at), id, string(from))
	if err != nil {
		return fmt.Errorf("update root %q state: %w", id, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	// Nothing changed: tell a missing root from one in another state.
	var cur string
	err = t.q.QueryRow(ctx, `SELECT state FROM roots WHERE id = $1`, id).Scan(&cur)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("root %q: %w", id, store.ErrNotFound)
	case err != nil:
		return fmt.Errorf("update root %q state: %w", id, err)
	}
	return fmt.Errorf("root %q is %s, not %s: %w", id, cur, from, store.ErrConflict)
}

// scanRoot reads a row of rootColumns.
func scanRoot(s scanner) (store.Root, error) {
	var (
		r                              store.Root
		state, notAfter, createdAt, at string
		seq                            int64
	)
	if err := s.Scan(&r.ID, &r.TrustDomain, &state, &r.KeyRef, &r.ChainPEM, &notAfter, &createdAt, &r.CrossPEM, &seq, &at); err != nil {
		return store.Root{}, err
	}
	r.State = store.RootState(state)
	if len(r.CrossPEM) == 0 {
		r.CrossPEM = nil
	}
	var err error
	if r.AddedSequence, err = sequenceValue("root "+r.ID+" added_sequence", seq); err != nil {
		return store.Root{}, err
	}
	if r.NotAfter, err = timetext.Parse(notAfter); err != nil {
		return store.Root{}, fmt.Errorf("root %q not_after: %w", r.ID, err)
	}
	if r.CreatedAt, err = timetext.Parse(createdAt); err != nil {
		return store.Root{}, fmt.Errorf("root %q created_at: %w", r.ID, err)
	}
	if r.StateChangedAt, err = timetext.ParseOpt(at); err != nil {
		return store.Root{}, fmt.Errorf("root %q state_changed_at: %w", r.ID, err)
	}
	return r, nil
}
