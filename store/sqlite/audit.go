package sqlite

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/meshroot/meshroot/store"
)

const auditColumns = `seq, time, actor, action, target, result, details, prev_hash, hash`

// ListAudit returns up to limit entries with Seq > afterSeq in Seq order
// (limit <= 0: all).
func (r reader) ListAudit(ctx context.Context, afterSeq int64, limit int) ([]store.AuditEntry, error) {
	entries, err := listAudit(ctx, r.q, afterSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("list audit log: %w", err)
	}
	return entries, nil
}

// AppendAudit appends e after the audit head, assigning its Seq, PrevHash and
// Hash, and moves the head to it in the same transaction. A zero e.Time is
// set to the current time; the time is stored, hashed and returned in UTC.
func (t *tx) AppendAudit(ctx context.Context, e store.AuditEntry) (store.AuditEntry, error) {
	head, err := auditHead(ctx, t.q)
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
	_, err = t.q.ExecContext(ctx, `INSERT INTO audit_log (`+auditColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.Seq, formatTime(e.Time), e.Actor, e.Action, e.Target, e.Result, e.Details, e.PrevHash, e.Hash)
	switch {
	case isUniqueViolation(err):
		return store.AuditEntry{}, fmt.Errorf("append audit entry: seq %d is already in the log although the head records seq %d: the audit log was modified outside meshroot, run an audit verification: %w",
			e.Seq, head.Seq, store.ErrAlreadyExists)
	case err != nil:
		return store.AuditEntry{}, fmt.Errorf("append audit entry: %w", err)
	}
	// Both halves of the head in one statement (one per audit row).
	if _, err := t.q.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?), (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
		keyAuditHeadSeq, strconv.FormatInt(e.Seq, 10), keyAuditHeadHash, e.Hash); err != nil {
		return store.AuditEntry{}, fmt.Errorf("append audit entry: move head: %w", err)
	}
	return e, nil
}

// AuditHead returns the seq and hash of the last audit row as recorded
// apart from the log (Seq 0 when nothing was ever appended).
func (s *Store) AuditHead(ctx context.Context) (*store.AuditHead, error) {
	head, err := auditHead(ctx, s.r)
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

// VerifyAuditRows reads the audit log and its head from one snapshot and
// checks them row by row with a store.ChainVerifier, holding one row at a
// time, and returns the number of rows. A broken chain is reported as a
// *store.ChainError.
func (s *Store) VerifyAuditRows(ctx context.Context) (int64, error) {
	// One read transaction, so that an append in between cannot make the
	// head and the rows disagree.
	rtx, err := s.r.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("verify audit log: begin: %w", err)
	}
	defer rtx.Rollback()
	head, err := auditHead(ctx, rtx)
	if err != nil {
		return 0, fmt.Errorf("verify audit log: %w", err)
	}
	rows, err := rtx.QueryContext(ctx, `SELECT `+auditColumns+` FROM audit_log ORDER BY seq`)
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

// listAudit returns up to limit entries after afterSeq (limit <= 0: all).
func listAudit(ctx context.Context, q querier, afterSeq int64, limit int) ([]store.AuditEntry, error) {
	if limit <= 0 {
		limit = -1 // no limit in SQLite
	}
	return listRows(ctx, q, scanAudit,
		`SELECT `+auditColumns+` FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?`, afterSeq, limit)
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
	if e.Time, err = parseTime(at); err != nil {
		return store.AuditEntry{}, fmt.Errorf("audit seq %d time: %w", e.Seq, err)
	}
	return e, nil
}
