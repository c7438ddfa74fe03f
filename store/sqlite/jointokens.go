package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/meshroot/meshroot/store"
)

const joinTokenColumns = `id, cluster, secret_hash, created_at, expires_at, used_at, key_hash, issued_serial`

// GetJoinToken returns the join token with id.
func (r reader) GetJoinToken(ctx context.Context, id string) (store.JoinToken, error) {
	jt, err := scanJoinToken(r.q.QueryRowContext(ctx, `SELECT `+joinTokenColumns+` FROM join_tokens WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.JoinToken{}, fmt.Errorf("join token %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.JoinToken{}, fmt.Errorf("get join token %q: %w", id, err)
	}
	return jt, nil
}

// CreateJoinToken adds jt. It fails with store.ErrAlreadyExists when a token
// with the same ID exists and with store.ErrNotFound when jt.Cluster names
// no cluster. Zero times read back as zero; a zero ExpiresAt is already
// expired.
func (t *tx) CreateJoinToken(ctx context.Context, jt store.JoinToken) error {
	if jt.ID == "" {
		return errors.New("create join token: empty token id")
	}
	_, err := t.q.ExecContext(ctx, `INSERT INTO join_tokens (`+joinTokenColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		jt.ID, jt.Cluster, nonNil(jt.SecretHash),
		formatOptTime(jt.CreatedAt), formatOptTime(jt.ExpiresAt), formatOptTime(jt.UsedAt), nonNil(jt.KeyHash), jt.IssuedSerial)
	switch {
	case isUniqueViolation(err):
		return fmt.Errorf("join token %q: %w", jt.ID, store.ErrAlreadyExists)
	case isForeignKeyViolation(err):
		return fmt.Errorf("join token %q: cluster %q: %w", jt.ID, jt.Cluster, store.ErrNotFound)
	case err != nil:
		return fmt.Errorf("create join token %q: %w", jt.ID, err)
	}
	return nil
}

// UseJoinToken marks the token with id used at at. It fails with
// store.ErrNotFound when there is no such token and store.ErrConflict when
// it was used before. Marking is a single conditional UPDATE, so of two
// concurrent users (in this process or another) exactly one succeeds.
// Expiry is not checked here.
func (t *tx) UseJoinToken(ctx context.Context, id string, at time.Time, keyHash []byte) error {
	if at.IsZero() {
		// Stored as "", which means unused: the token could be used again.
		return fmt.Errorf("use join token %q: zero time", id)
	}
	res, err := t.q.ExecContext(ctx, `UPDATE join_tokens SET used_at = ?, key_hash = ? WHERE id = ? AND used_at = ''`,
		formatOptTime(at), nonNil(keyHash), id)
	if err != nil {
		return fmt.Errorf("use join token %q: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("use join token %q: %w", id, err)
	}
	if n == 1 {
		return nil
	}
	// Nothing changed: tell a missing token from a used one. The UPDATE
	// above decided; this read only picks the error.
	var usedAt string
	err = t.q.QueryRowContext(ctx, `SELECT used_at FROM join_tokens WHERE id = ?`, id).Scan(&usedAt)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("join token %q: %w", id, store.ErrNotFound)
	case err != nil:
		return fmt.Errorf("use join token %q: %w", id, err)
	}
	return fmt.Errorf("join token %q: already used at %s: %w", id, usedAt, store.ErrConflict)
}

// RecordJoinTokenIssue records serial on the used token id spent with
// keyHash, in one conditional UPDATE: of concurrent issuances at most one
// records. It fails with store.ErrNotFound when there is no such token and
// store.ErrConflict when it is unused, was spent with another key or
// already names a serial.
func (t *tx) RecordJoinTokenIssue(ctx context.Context, id string, keyHash []byte, serial string) error {
	if len(keyHash) == 0 || serial == "" {
		return fmt.Errorf("record issuance on join token %q: empty key hash or serial", id)
	}
	res, err := t.q.ExecContext(ctx, `UPDATE join_tokens SET issued_serial = ?
		WHERE id = ? AND used_at <> '' AND key_hash = ? AND issued_serial = ''`, serial, id, keyHash)
	if err != nil {
		return fmt.Errorf("record issuance on join token %q: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("record issuance on join token %q: %w", id, err)
	}
	if n == 1 {
		return nil
	}
	if _, err := t.GetJoinToken(ctx, id); err != nil {
		return err
	}
	return fmt.Errorf("join token %q: unused, spent with another key or already issued: %w", id, store.ErrConflict)
}

// DeleteExpiredJoinTokens removes the tokens whose ExpiresAt is before now,
// used or not, and returns how many it removed.
func (t *tx) DeleteExpiredJoinTokens(ctx context.Context, now time.Time) (int, error) {
	// The fixed-width time layout sorts as text, and a zero ExpiresAt
	// (stored as "") sorts first, so it counts as expired.
	res, err := t.q.ExecContext(ctx, `DELETE FROM join_tokens WHERE expires_at < ?`, formatOptTime(now))
	if err != nil {
		return 0, fmt.Errorf("delete expired join tokens: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("delete expired join tokens: %w", err)
	}
	return int(n), nil
}

// scanJoinToken reads a row of joinTokenColumns.
func scanJoinToken(s scanner) (store.JoinToken, error) {
	var (
		jt                           store.JoinToken
		createdAt, expiresAt, usedAt string
	)
	if err := s.Scan(&jt.ID, &jt.Cluster, &jt.SecretHash, &createdAt, &expiresAt, &usedAt, &jt.KeyHash, &jt.IssuedSerial); err != nil {
		return store.JoinToken{}, err
	}
	var err error
	if jt.CreatedAt, err = parseOptTime(createdAt); err != nil {
		return store.JoinToken{}, fmt.Errorf("join token %q created_at: %w", jt.ID, err)
	}
	if jt.ExpiresAt, err = parseOptTime(expiresAt); err != nil {
		return store.JoinToken{}, fmt.Errorf("join token %q expires_at: %w", jt.ID, err)
	}
	if jt.UsedAt, err = parseOptTime(usedAt); err != nil {
		return store.JoinToken{}, fmt.Errorf("join token %q used_at: %w", jt.ID, err)
	}
	return jt, nil
}
