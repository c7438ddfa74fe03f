package postgres

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/internal/timetext"
)

const auditColumns = `seq, time, actor, action, target, result, details, prev_hash, hash`

// ListAudit returns up to limit entries with Seq > afterSeq in Seq order
// (limit <= 0: all).
func (r reader) ListAudit(ctx context.Context, afterSeq int64, limit int) ([]store.AuditEntry, error) {
	var lim *int64
	if limit > 0 {
		n := int64(limit)
		lim = &n
	}
	entries, err := listRows(ctx, r.q, scanAudit,
		`SELECT `+auditColumns+` FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2`, afterSeq, lim)
	if err != nil {
		return nil, fmt.Errorf("list audit log: %w", err)
	}
	return entries, nil
}

// AppendAudit appends e after the audit head, assigning its Seq, PrevHash and
// Hash, and moves the head to it in the same transaction. Writers hold the
// write lock (see Update), so the head cannot move under it: the chain
// stays linear across replicas. A zero e.Time is set to the current time;
// the time is stored, hashed and returned in UTC.
func (t *tx) AppendAudit(ctx context.Context, e store.AuditEntry) (store.AuditEntry, error) {
	head, err := t.auditHead(ctx)
	if err != nil {
		return store.AuditEntry{}, fmt.Errorf("append audit entry: %w", err)
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Time = e.Time.UTC()
	e.Seq = head.Seq + 1
	e.PrevHash = head.Hash
	e.Hash = store.ChainHash(e.PrevHash, e)
	// The row and the head that points at it, in one statement (one
	// round trip): the head moves only if the row went in.
	tag, err := t.q.Exec(ctx, `WITH ins AS (
			INSERT INTO audit_log (`+auditColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING RETURNING seq)
		INSERT INTO meta (key, value) SELECT h.k, h.v FROM ins, (VALUES ($10::text, $11::text), ($12::text, $13::text)) AS h(k, v)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
		e.Seq, timetext.Format(e.Time), e.Actor, e.Action, e.Target, e.Result, e.Details, e.PrevHash, e.Hash,
		keyAuditHeadSeq, strconv.FormatInt(e.Seq, 10), keyAuditHeadHash, e.Hash)
	switch {
	case err != nil:
		return store.AuditEntry{}, fmt.Errorf("append audit entry: %w", err)
	case tag.RowsAffected() == 0:
		return store.AuditEntry{}, fmt.Errorf("append audit entry: seq %d is already in the log although the head records seq %d: the audit log was modified outside meshroot, run an audit verification: %w",
			e.Seq, head.Seq, store.ErrAlreadyExists)
	}
	if t.head != nil {
		t.head.cur = &store.AuditHead{Seq: e.Seq, Hash: e.Hash}
	}
	return e, nil
}

// auditHead is the head as this transaction sees it: cached when an
// earlier append of the transaction moved it, read otherwise.
func (t *tx) auditHead(ctx context.Context) (*store.AuditHead, error) {
	if t.head != nil && t.head.cur != nil {
		h := *t.head.cur
		return &h, nil
	}
	head, err := auditHead(ctx, t.q)
	if err == nil && t.head != nil {
		t.head.cur = head
	}
	return head, err
}

// AuditHead returns the seq and hash of the last audit row as recorded
// apart from the log (Seq 0 when nothing was ever appended).
func (s *Store) AuditHead(ctx context.Context) (*store.AuditHead, error) {
	head, err := auditHead(ctx, s.q)
	if err != nil {
		return nil, fmt.Errorf("get audit head: %w", err)
	}
	return head, nil
}

// VerifyAudit checks the audit log and its head with store.VerifyChain's
// rules (see VerifyAuditRows). A broken chain is a *store.ChainError.
func (s *Store) VerifyAudit(ctx context.Context) error {
	_, err := s.VerifyAuditRows(ctx)
	return err
}

// VerifyAuditRows reads the audit log and its head from one REPEATABLE READ
// snapshot and checks them row by row with a store.ChainVerifier, holding
// one row at a time, and returns the number of rows.
func (s *Store) VerifyAuditRows(ctx context.Context) (int64, error) {
	var n int64
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(t pgx.Tx) error {
		var err error
		n, err = verifyAudit(ctx, t)
		return err
	})
	return n, markLost(err)
}

// verifyAudit checks the audit log and its head as q sees them.
func verifyAudit(ctx context.Context, q querier) (int64, error) {
	head, err := auditHead(ctx, q)
	if err != nil {
		return 0, fmt.Errorf("verify audit log: %w", err)
	}
	rows, err := q.Query(ctx, `SELECT `+auditColumns+` FROM audit_log ORDER BY seq`)
	if err != nil {
		return 0, fmt.Errorf("verify audit log: %w", err)
	}
	defer rows.Close()
	var v store.ChainVerifier
	for rows.Next() {
		e, err := scanAudit(rows)
		if err != nil {
			return 0, fmt.Errorf("verify audit log: %w", err)
		}
		if err := v.Add(e); err != nil {
			return 0, err
		}
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("verify audit log: %w", err)
	}
	if err := v.Finish(head); err != nil {
		return 0, err
	}
	return v.Rows(), nil
}

// scanAudit reads a row of auditColumns.
func scanAudit(s scanner) (store.AuditEntry, error) {
	var (
		e  store.AuditEntry
		at string
	)
	if err := s.Scan(&e.Seq, &at, &e.Actor, &e.Action, &e.Target, &e.Result, &e.Details, &e.PrevHash, &e.Hash); err != nil {
		return store.AuditEntry{}, err
	}
	var err error
	if e.Time, err = timetext.Parse(at); err != nil {
		return store.AuditEntry{}, fmt.Errorf("audit seq %d time: %w", e.Seq, err)
	}
	return e, nil
}
