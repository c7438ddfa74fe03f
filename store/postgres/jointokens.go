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

const joinTokenColumns = `id, cluster, secret_hash, created_at, expires_at, used_at, key_hash, issued_serial`

// GetJoinToken returns the join token with id.
func (r reader) GetJoinToken(ctx context.Context, id string) (store.JoinToken, error) {
	jt, err := scanJoinToken(r.q.QueryRow(ctx, `SELECT `+joinTokenColumns+` FROM join_tokens WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.JoinToken{}, fmt.Errorf("join token %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.JoinToken{}, fmt.Errorf("get join token %q: %w", id, err)
	}
	return jt, nil
}

// CreateJoinToken adds jt. It fails with store.ErrAlreadyExists when a token
// with the same ID exists and with store.ErrNotFound when jt.Cluster names
// no cluster; the transaction goes on in both cases. Zero times read back
// as zero; a zero ExpiresAt is already expired.
func (t *tx) CreateJoinToken(ctx context.Context, jt store.JoinToken) error {
	if jt.ID == "" {
		return errors.New("create join token: empty token id")
	}
	tag, err := t.q.Exec(ctx, `INSERT INTO join_tokens (`+joinTokenColumns+`)
		SELECT $1::text, $2::text, $3::bytea, $4::text, $5::text, $6::text, $7::bytea, $8::text
		WHERE EXISTS (SELECT 1 FROM clusters WHERE name = $2::text)
		ON CONFLICT DO NOTHING`,
		jt.ID, jt.Cluster, nonNil(jt.SecretHash),
		timetext.FormatOpt(jt.CreatedAt), timetext.FormatOpt(jt.ExpiresAt), timetext.FormatOpt(jt.UsedAt), nonNil(jt.KeyHash), jt.IssuedSerial)
	if err != nil {
		return fmt.Errorf("create join token %q: %w", jt.ID, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	if _, err := t.GetJoinToken(ctx, jt.ID); err == nil {
		return fmt.Errorf("join token %q: %w", jt.ID, store.ErrAlreadyExists)
	}
	return fmt.Errorf("join token %q: cluster %q: %w", jt.ID, jt.Cluster, store.ErrNotFound)
}

// UseJoinToken marks the token with id used at at in one conditional
// UPDATE, so of two concurrent users exactly one succeeds. It fails with
// store.ErrNotFound when there is no such token and store.ErrConflict when
// it was used before. Expiry is not checked here.
func (t *tx) UseJoinToken(ctx context.Context, id string, at time.Time, keyHash []byte) error {
	if at.IsZero() {
		// Stored as "", which means unused: the token could be used again.
		return fmt.Errorf("use join token %q: zero time", id)
	}
	tag, err := t.q.Exec(ctx, `UPDATE join_tokens SET used_at = $1, key_hash = $3 WHERE id = $2 AND used_at = ''`, timetext.FormatOpt(at), id, nonNil(keyHash))
	if err != nil {
		return fmt.Errorf("use join token %q: %w", id, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var usedAt string
	err = t.q.QueryRow(ctx, `SELECT used_at FROM join_tokens WHERE id = $1`, id).Scan(&usedAt)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
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
	tag, err := t.q.Exec(ctx, `UPDATE join_tokens SET issued_serial = $1
		WHERE id = $2 AND used_at <> '' AND key_hash = $3 AND issued_serial = ''`, serial, id, keyHash)
	if err != nil {
		return fmt.Errorf("record issuance on join token %q: %w", id, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	if _, err := t.GetJoinToken(ctx, id); err != nil {
		return err
	}
	return fmt.Errorf("join token %q: unused, spent with another key or already issued: %w", id, store.ErrConflict)
}

// DeleteExpiredJoinTokens removes the tokens whose ExpiresAt is before now,
// used or not, and returns how many it removed. A zero ExpiresAt (stored
// as "") sorts first, so it counts as expired.
func (t *tx) DeleteExpiredJoinTokens(ctx context.Context, now time.Time) (int, error) {
	tag, err := t.q.Exec(ctx, `DELETE FROM join_tokens WHERE expires_at < $1`, timetext.FormatOpt(now))
	if err != nil {
		return 0, fmt.Errorf("delete expired join tokens: %w", err)
	}
	return int(tag.RowsAffected()), nil
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
	if jt.CreatedAt, err = timetext.ParseOpt(createdAt); err != nil {
		return store.JoinToken{}, fmt.Errorf("join token %q created_at: %w", jt.ID, err)
	}
	if jt.ExpiresAt, err = timetext.ParseOpt(expiresAt); err != nil {
		return store.JoinToken{}, fmt.Errorf("join token %q expires_at: %w", jt.ID, err)
	}
	if jt.UsedAt, err = timetext.ParseOpt(usedAt); err != nil {
		return store.JoinToken{}, fmt.Errorf("join token %q used_at: %w", jt.ID, err)
	}
	return jt, nil
}
