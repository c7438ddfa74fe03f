package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/internal/timetext"
)

const crlColumns = `issuer, number, der, this_update, next_update`

func scanCRL(sc scanner) (store.CRL, error) {
	var c store.CRL
	var number int64
	var this, next string
	if err := sc.Scan(&c.Issuer, &number, &c.DER, &this, &next); err != nil {
		return c, err
	}
	c.Number = uint64(number)
	var err error
	if c.ThisUpdate, err = timetext.Parse(this); err != nil {
		return c, err
	}
	c.NextUpdate, err = timetext.Parse(next)
	return c, err
}

// GetCRL returns the last CRL of issuer.
func (r reader) GetCRL(ctx context.Context, issuer string) (store.CRL, error) {
	c, err := scanCRL(r.q.QueryRow(ctx, `SELECT `+crlColumns+` FROM crls WHERE issuer = $1`, issuer))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.CRL{}, fmt.Errorf("crl of %q: %w", issuer, store.ErrNotFound)
	}
	if err != nil {
		return store.CRL{}, fmt.Errorf("get crl of %q: %w", issuer, err)
	}
	return c, nil
}

// ListCRLs returns every stored CRL ordered by issuer.
func (r reader) ListCRLs(ctx context.Context) ([]store.CRL, error) {
	out, err := listRows(ctx, r.q, scanCRL, `SELECT `+crlColumns+` FROM crls ORDER BY issuer`)
	if err != nil {
		return nil, fmt.Errorf("list crls: %w", err)
	}
	return out, nil
}

// PutCRL stores c unless the stored CRL of its issuer has a number as high.
func (t *tx) PutCRL(ctx context.Context, c store.CRL) error {
	if c.Number > 1<<62 {
		return fmt.Errorf("put crl of %q: number %d too large", c.Issuer, c.Number)
	}
	tag, err := t.q.Exec(ctx, `INSERT INTO crls (`+crlColumns+`) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (issuer) DO UPDATE SET number = excluded.number, der = excluded.der,
	this_update = excluded.this_update, next_update = excluded.next_update
WHERE crls.number < excluded.number`,
		c.Issuer, int64(c.Number), nonNil(c.DER), timetext.Format(c.ThisUpdate), timetext.Format(c.NextUpdate))
	if err != nil {
		return fmt.Errorf("put crl of %q: %w", c.Issuer, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("put crl of %q: number %d is not above the stored one: %w", c.Issuer, c.Number, store.ErrConflict)
	}
	return nil
}

func scanRevocation(sc scanner) (store.Revocation, error) {
	var r store.Revocation
	var at string
	var listed int64
	if err := sc.Scan(&r.Serial, &r.Reason, &at, &listed); err != nil {
		return r, err
	}
	r.ListedIn = uint64(max(listed, 0))
	var err error
	r.RevokedAt, err = timetext.Parse(at)
	return r, err
}

// ListRevocations returns every revocation record ordered by serial.
func (r reader) ListRevocations(ctx context.Context) ([]store.Revocation, error) {
	out, err := listRows(ctx, r.q, scanRevocation, `SELECT serial, reason, revoked_at, crl_number FROM revocations ORDER BY serial`)
	if err != nil {
		return nil, fmt.Errorf("list revocations: %w", err)
	}
	return out, nil
}

// RecordRevocation records rv unless its serial is recorded already.
func (t *tx) RecordRevocation(ctx context.Context, rv store.Revocation) error {
	_, err := t.q.Exec(ctx, `INSERT INTO revocations (serial, reason, revoked_at, crl_number) VALUES ($1, $2, $3, $4)
ON CONFLICT (serial) DO NOTHING`, rv.Serial, rv.Reason, timetext.Format(rv.RevokedAt), int64(rv.ListedIn))
	if err != nil {
		return fmt.Errorf("record revocation of %s: %w", rv.Serial, err)
	}
	return nil
}

func scanQuarantine(sc scanner) (store.Quarantine, error) {
	var q store.Quarantine
	var at string
	if err := sc.Scan(&q.Cluster, &q.Reason, &at, &q.Actor); err != nil {
		return q, err
	}
	var err error
	q.At, err = timetext.Parse(at)
	return q, err
}

// GetQuarantine returns cluster's quarantine.
func (r reader) GetQuarantine(ctx context.Context, cluster string) (store.Quarantine, error) {
	q, err := scanQuarantine(r.q.QueryRow(ctx, `SELECT cluster, reason, at, actor FROM quarantines WHERE cluster = $1`, cluster))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Quarantine{}, fmt.Errorf("quarantine of cluster %q: %w", cluster, store.ErrNotFound)
	}
	if err != nil {
		return store.Quarantine{}, fmt.Errorf("get quarantine of cluster %q: %w", cluster, err)
	}
	return q, nil
}

// ListQuarantines returns every quarantine ordered by cluster.
func (r reader) ListQuarantines(ctx context.Context) ([]store.Quarantine, error) {
	out, err := listRows(ctx, r.q, scanQuarantine, `SELECT cluster, reason, at, actor FROM quarantines ORDER BY cluster`)
	if err != nil {
		return nil, fmt.Errorf("list quarantines: %w", err)
	}
	return out, nil
}

// SetQuarantine records q, replacing an earlier one of the same cluster.
func (t *tx) SetQuarantine(ctx context.Context, q store.Quarantine) error {
	_, err := t.q.Exec(ctx, `INSERT INTO quarantines (cluster, reason, at, actor) VALUES ($1, $2, $3, $4)
ON CONFLICT (cluster) DO UPDATE SET reason = excluded.reason, at = excluded.at, actor = excluded.actor`,
		q.Cluster, q.Reason, timetext.Format(q.At), q.Actor)
	if err != nil {
		return fmt.Errorf("quarantine cluster %q: %w", q.Cluster, err)
	}
	return nil
}

// DeleteQuarantine lifts cluster's quarantine.
func (t *tx) DeleteQuarantine(ctx context.Context, cluster string) error {
	tag, err := t.q.Exec(ctx, `DELETE FROM quarantines WHERE cluster = $1`, cluster)
	if err != nil {
		return fmt.Errorf("release cluster %q: %w", cluster, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("quarantine of cluster %q: %w", cluster, store.ErrNotFound)
	}
	return nil
}

// MarkRevocationsListed sets crl_number for the serials on no CRL yet.
func (t *tx) MarkRevocationsListed(ctx context.Context, serials []string, number uint64) error {
	if len(serials) == 0 {
		return nil
	}
	if _, err := t.q.Exec(ctx, `UPDATE revocations SET crl_number = $1 WHERE crl_number = 0 AND serial = ANY($2)`, int64(number), serials); err != nil {
		return fmt.Errorf("mark revocations listed in CRL %d: %w", number, err)
	}
	return nil
}
