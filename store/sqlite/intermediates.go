package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/internal/rowscan"
)

const intermediateColumns = `serial, cluster, root_id, not_before, not_after, status, cert_pem, created_at, superseded_at`

// GetIntermediate returns the intermediate with serial.
func (r reader) GetIntermediate(ctx context.Context, serial string) (store.Intermediate, error) {
	in, err := scanIntermediate(r.q.QueryRowContext(ctx, `SELECT `+intermediateColumns+` FROM intermediates WHERE serial = ?`, serial))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Intermediate{}, fmt.Errorf("intermediate %q: %w", serial, store.ErrNotFound)
	}
	if err != nil {
		return store.Intermediate{}, fmt.Errorf("get intermediate %q: %w", serial, err)
	}
	return in, nil
}

// registeredIntermediateQuery reads an intermediate (intermediateColumns)
// and the creation time of its cluster's registration (renamed, so that
// the intermediate's own columns are named as everywhere else).
const registeredIntermediateQuery = `SELECT ` + intermediateColumns + `, registered_at FROM intermediates
	JOIN (SELECT name, created_at AS registered_at FROM clusters) c ON c.name = intermediates.cluster WHERE serial = ?`

// GetRegisteredIntermediate returns the intermediate with serial and the
// current registration of its cluster, in one statement.
func (r reader) GetRegisteredIntermediate(ctx context.Context, serial string) (store.RegisteredIntermediate, error) {
	var registered string
	in, err := scanIntermediate(rowscan.WithExtra{Row: r.q.QueryRowContext(ctx, registeredIntermediateQuery, serial), Extra: []any{&registered}})
	if errors.Is(err, sql.ErrNoRows) {
		return store.RegisteredIntermediate{}, fmt.Errorf("intermediate %q of a registered cluster: %w", serial, store.ErrNotFound)
	}
	if err != nil {
		return store.RegisteredIntermediate{}, fmt.Errorf("get intermediate %q: %w", serial, err)
	}
	at, err := parseTime(registered)
	if err != nil {
		return store.RegisteredIntermediate{}, fmt.Errorf("cluster %q created_at: %w", in.Cluster, err)
	}
	return store.RegisteredIntermediate{Intermediate: in, Registration: store.Registration{Name: in.Cluster, CreatedAt: at}}, nil
}

// ListIntermediatesByStatus returns the intermediates of every cluster in
// status, oldest first.
func (r reader) ListIntermediatesByStatus(ctx context.Context, status store.IntermediateStatus) ([]store.Intermediate, error) {
	list, err := listRows(ctx, r.q, scanIntermediate,
		`SELECT `+intermediateColumns+` FROM intermediates WHERE status = ? ORDER BY created_at, rowid`, string(status))
	if err != nil {
		return nil, fmt.Errorf("list %s intermediates: %w", status, err)
	}
	return list, nil
}

// ListIntermediates returns the intermediates of cluster (all clusters when
// cluster is empty), oldest first.
func (r reader) ListIntermediates(ctx context.Context, cluster string) ([]store.Intermediate, error) {
	var (
		list []store.Intermediate
		err  error
	)
	if cluster == "" {
		list, err = listRows(ctx, r.q, scanIntermediate,
			`SELECT `+intermediateColumns+` FROM intermediates ORDER BY created_at, rowid`)
	} else {
		list, err = listRows(ctx, r.q, scanIntermediate,
			`SELECT `+intermediateColumns+` FROM intermediates WHERE cluster = ? ORDER BY created_at, rowid`, cluster)
	}
	if err != nil {
		return nil, fmt.Errorf("list intermediates: %w", err)
	}
	return list, nil
}

// CreateIntermediate adds in. It fails with store.ErrAlreadyExists when an
// intermediate with the same serial exists and with store.ErrNotFound when
// in.RootID names no root.
func (t *tx) CreateIntermediate(ctx context.Context, in store.Intermediate) error {
	if in.Serial == "" {
		return errors.New("create intermediate: empty serial")
	}
	_, err := t.q.ExecContext(ctx, `INSERT INTO intermediates (`+intermediateColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		in.Serial, in.Cluster, in.RootID, formatTime(in.NotBefore), formatTime(in.NotAfter),
		string(in.Status), nonNil(in.CertPEM), formatTime(in.CreatedAt), formatOptTime(in.SupersededAt))
	switch {
	case isUniqueViolation(err):
		return fmt.Errorf("intermediate %q: %w", in.Serial, store.ErrAlreadyExists)
	case isForeignKeyViolation(err):
		return fmt.Errorf("intermediate %q: root %q: %w", in.Serial, in.RootID, store.ErrNotFound)
	case err != nil:
		return fmt.Errorf("create intermediate %q: %w", in.Serial, err)
	}
	return nil
}

// UpdateIntermediateStatus sets the status of the intermediate with serial.
func (t *tx) UpdateIntermediateStatus(ctx context.Context, serial string, status store.IntermediateStatus) error {
	res, err := t.q.ExecContext(ctx, `UPDATE intermediates SET status = ? WHERE serial = ?`, string(status), serial)
	if err != nil {
		return fmt.Errorf("update intermediate %q status: %w", serial, err)
	}
	return mustAffect(res, "intermediate", serial)
}

// SupersedeIntermediates marks the active intermediates of cluster
// superseded at at in one statement (indexed by cluster and status).
func (t *tx) SupersedeIntermediates(ctx context.Context, cluster string, at time.Time) (int, error) {
	res, err := t.q.ExecContext(ctx, `UPDATE intermediates SET status = ?, superseded_at = ? WHERE cluster = ? AND status = ?`,
		string(store.IntermediateSuperseded), formatOptTime(at), cluster, string(store.IntermediateActive))
	if err != nil {
		return 0, fmt.Errorf("supersede intermediates of cluster %q: %w", cluster, err)
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// RevokeClusterIntermediates marks every intermediate of cluster that is not
// revoked yet revoked, and returns their serials, oldest first. The select
// and the update run in the caller's transaction, so they see the same rows.
func (t *tx) RevokeClusterIntermediates(ctx context.Context, cluster string) ([]string, error) {
	serials, err := listRows(ctx, t.q, func(s scanner) (string, error) {
		var serial string
		err := s.Scan(&serial)
		return serial, err
	}, `SELECT serial FROM intermediates WHERE cluster = ? AND status != ? ORDER BY created_at, rowid`,
		cluster, string(store.IntermediateRevoked))
	if err != nil {
		return nil, fmt.Errorf("revoke intermediates of cluster %q: %w", cluster, err)
	}
	if _, err := t.q.ExecContext(ctx, `UPDATE intermediates SET status = ? WHERE cluster = ? AND status != ?`,
		string(store.IntermediateRevoked), cluster, string(store.IntermediateRevoked)); err != nil {
		return nil, fmt.Errorf("revoke intermediates of cluster %q: %w", cluster, err)
	}
	return serials, nil
}

// scanIntermediate reads a row of intermediateColumns.
func scanIntermediate(s scanner) (store.Intermediate, error) {
	var (
		in                                           store.Intermediate
		status                                       string
		notBefore, notAfter, createdAt, supersededAt string
	)
	if err := s.Scan(&in.Serial, &in.Cluster, &in.RootID, &notBefore, &notAfter, &status, &in.CertPEM, &createdAt, &supersededAt); err != nil {
		return store.Intermediate{}, err
	}
	in.Status = store.IntermediateStatus(status)
	var err error
	if in.NotBefore, err = parseTime(notBefore); err != nil {
		return store.Intermediate{}, fmt.Errorf("intermediate %q not_before: %w", in.Serial, err)
	}
	if in.NotAfter, err = parseTime(notAfter); err != nil {
		return store.Intermediate{}, fmt.Errorf("intermediate %q not_after: %w", in.Serial, err)
	}
	if in.CreatedAt, err = parseTime(createdAt); err != nil {
		return store.Intermediate{}, fmt.Errorf("intermediate %q created_at: %w", in.Serial, err)
	}
	if in.SupersededAt, err = parseOptTime(supersededAt); err != nil {
		return store.Intermediate{}, fmt.Errorf("intermediate %q superseded_at: %w", in.Serial, err)
	}
	return in, nil
}
