package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/internal/rowscan"
	"github.com/meshroot/meshroot/store/internal/timetext"
)

const intermediateColumns = `serial, cluster, root_id, not_before, not_after, status, cert_pem, created_at, superseded_at`

// GetIntermediate returns the intermediate with serial.
func (r reader) GetIntermediate(ctx context.Context, serial string) (store.Intermediate, error) {
	in, err := scanIntermediate(r.q.QueryRow(ctx, `SELECT `+intermediateColumns+` FROM intermediates WHERE serial = $1`, serial))
	if errors.Is(err, pgx.ErrNoRows) {
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
	JOIN (SELECT name, created_at AS registered_at FROM clusters) c ON c.name = intermediates.cluster WHERE serial = $1`

// GetRegisteredIntermediate returns the intermediate with serial and the
// current registration of its cluster, in one statement.
func (r reader) GetRegisteredIntermediate(ctx context.Context, serial string) (store.RegisteredIntermediate, error) {
	var registered string
	in, err := scanIntermediate(rowscan.WithExtra{Row: r.q.QueryRow(ctx, registeredIntermediateQuery, serial), Extra: []any{&registered}})
	if errors.Is(err, pgx.ErrNoRows) {
		return store.RegisteredIntermediate{}, fmt.Errorf("intermediate %q of a registered cluster: %w", serial, store.ErrNotFound)
	}
	if err != nil {
		return store.RegisteredIntermediate{}, fmt.Errorf("get intermediate %q: %w", serial, err)
	}
	at, err := timetext.Parse(registered)
	if err != nil {
		return store.RegisteredIntermediate{}, fmt.Errorf("cluster %q created_at: %w", in.Cluster, err)
	}
	return store.RegisteredIntermediate{Intermediate: in, Registration: store.Registration{Name: in.Cluster, CreatedAt: at}}, nil
}

// ListIntermediatesByStatus returns the intermediates of every cluster in
// status, oldest first.
func (r reader) ListIntermediatesByStatus(ctx context.Context, status store.IntermediateStatus) ([]store.Intermediate, error) {
	list, err := listRows(ctx, r.q, scanIntermediate,
		`SELECT `+intermediateColumns+` FROM intermediates WHERE status = $1 ORDER BY created_at, ord`, string(status))
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
			`SELECT `+intermediateColumns+` FROM intermediates ORDER BY created_at, ord`)
	} else {
		list, err = listRows(ctx, r.q, scanIntermediate,
			`SELECT `+intermediateColumns+` FROM intermediates WHERE cluster = $1 ORDER BY created_at, ord`, cluster)
	}
	if err != nil {
		return nil, fmt.Errorf("list intermediates: %w", err)
	}
	return list, nil
}

// CreateIntermediate adds in. It fails with store.ErrAlreadyExists when an
// intermediate with the same serial exists and with store.ErrNotFound when
// in.RootID names no root; the transaction goes on in both cases.
func (t *tx) CreateIntermediate(ctx context.Context, in store.Intermediate) error {
	if in.Serial == "" {
		return errors.New("create intermediate: empty serial")
	}
	tag, err := t.q.Exec(ctx, `INSERT INTO intermediates (`+intermediateColumns+`)
		SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::bytea, $8::text, $9::text
		WHERE EXISTS (SELECT 1 FROM roots WHERE id = $3::text)
		ON CONFLICT DO NOTHING`,
		in.Serial, in.Cluster, in.RootID, timetext.Format(in.NotBefore), timetext.Format(in.NotAfter),
		string(in.Status), nonNil(in.CertPEM), timetext.Format(in.CreatedAt), timetext.FormatOpt(in.SupersededAt))
	if err != nil {
		return fmt.Errorf("create intermediate %q: %w", in.Serial, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	if _, err := t.GetIntermediate(ctx, in.Serial); err == nil {
		return fmt.Errorf("intermediate %q: %w", in.Serial, store.ErrAlreadyExists)
	}
	return fmt.Errorf("intermediate %q: root %q: %w", in.Serial, in.RootID, store.ErrNotFound)
}

// UpdateIntermediateStatus sets the status of the intermediate with serial.
func (t *tx) UpdateIntermediateStatus(ctx context.Context, serial string, status store.IntermediateStatus) error {
	tag, err := t.q.Exec(ctx, `UPDATE intermediates SET status = $1 WHERE serial = $2`, string(status), serial)
	if err != nil {
		return fmt.Errorf("update intermediate %q status: %w", serial, err)
	}
	return affected(tag, "intermediate", serial)
}

// SupersedeIntermediates marks the active intermediates of cluster
// superseded at at in one statement.
func (t *tx) SupersedeIntermediates(ctx context.Context, cluster string, at time.Time) (int, error) {
	tag, err := t.q.Exec(ctx, `UPDATE intermediates SET status = $1, superseded_at = $2 WHERE cluster = $3 AND status = $4`,
		string(store.IntermediateSuperseded), timetext.FormatOpt(at), cluster, string(store.IntermediateActive))
	if err != nil {
		return 0, fmt.Errorf("supersede intermediates of cluster %q: %w", cluster, err)
	}
	return int(tag.RowsAffected()), nil
}

// RevokeClusterIntermediates marks every intermediate of cluster that is not
// revoked yet revoked, and returns their serials, oldest first, in one
// statement.
func (t *tx) RevokeClusterIntermediates(ctx context.Context, cluster string) ([]string, error) {
	serials, err := listRows(ctx, t.q, func(s scanner) (string, error) {
		var serial string
		err := s.Scan(&serial)
		return serial, err
	}, `WITH revoked AS (
		UPDATE intermediates SET status = $1 WHERE cluster = $2 AND status <> $1
		RETURNING serial, created_at, ord)
	SELECT serial FROM revoked ORDER BY created_at, ord`, string(store.IntermediateRevoked), cluster)
	if err != nil {
		return nil, fmt.Errorf("revoke intermediates of cluster %q: %w", cluster, err)
	}
	return serials, nil
}

// scanIntermediate reads a row of intermediateColumns.
func scanIntermediate(s scanner) (store.Intermediate, error) {
	var (
		in                                                   store.Intermediate
		status, notBefore, notAfter, createdAt, supersededAt string
	)
	if err := s.Scan(&in.Serial, &in.Cluster, &in.RootID, &notBefore, &notAfter, &status, &in.CertPEM, &createdAt, &supersededAt); err != nil {
		return store.Intermediate{}, err
	}
	in.Status = store.IntermediateStatus(status)
	var err error
	if in.NotBefore, err = timetext.Parse(notBefore); err != nil {
		return store.Intermediate{}, fmt.Errorf("intermediate %q not_before: %w", in.Serial, err)
	}
	if in.NotAfter, err = timetext.Parse(notAfter); err != nil {
		return store.Intermediate{}, fmt.Errorf("intermediate %q not_after: %w", in.Serial, err)
	}
	if in.CreatedAt, err = timetext.Parse(createdAt); err != nil {
		return store.Intermediate{}, fmt.Errorf("intermediate %q created_at: %w", in.Serial, err)
	}
	if in.SupersededAt, err = timetext.ParseOpt(supersededAt); err != nil {
		return store.Intermediate{}, fmt.Errorf("intermediate %q superseded_at: %w", in.Serial, err)
	}
	return in, nil
}
