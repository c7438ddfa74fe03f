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

const adminCertColumns = `serial, name, role, issued_at, not_after, revoked_at`

// GetAdminCert returns the admin client certificate record of serial.
func (r reader) GetAdminCert(ctx context.Context, serial string) (store.AdminCert, error) {
	c, err := scanAdminCert(r.q.QueryRow(ctx, `SELECT `+adminCertColumns+` FROM admin_certs WHERE serial = $1`, serial))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.AdminCert{}, fmt.Errorf("admin certificate %q: %w", serial, store.ErrNotFound)
	}
	if err != nil {
		return store.AdminCert{}, fmt.Errorf("get admin certificate %q: %w", serial, err)
	}
	return c, nil
}

// ListAdminCerts returns every admin client certificate record, oldest
// issued first.
func (r reader) ListAdminCerts(ctx context.Context) ([]store.AdminCert, error) {
	cs, err := listRows(ctx, r.q, scanAdminCert, `SELECT `+adminCertColumns+` FROM admin_certs ORDER BY issued_at, serial`)
	if err != nil {
		return nil, fmt.Errorf("list admin certificates: %w", err)
	}
	return cs, nil
}

// CreateAdminCert adds c. It fails with store.ErrAlreadyExists when a
// record with the same serial exists; the transaction goes on.
func (t *tx) CreateAdminCert(ctx context.Context, c store.AdminCert) error {
	if c.Serial == "" {
		return errors.New("create admin certificate: empty serial")
	}
	tag, err := t.q.Exec(ctx, `INSERT INTO admin_certs (`+adminCertColumns+`) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
		c.Serial, c.Name, c.Role, timetext.FormatOpt(c.IssuedAt), timetext.FormatOpt(c.NotAfter), timetext.FormatOpt(c.RevokedAt))
	if err != nil {
		return fmt.Errorf("create admin certificate %q: %w", c.Serial, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("admin certificate %q: %w", c.Serial, store.ErrAlreadyExists)
	}
	return nil
}

// RevokeAdminCert marks serial revoked at at, in one conditional UPDATE:
// store.ErrNotFound when there is no such record, store.ErrConflict when it
// was revoked before.
func (t *tx) RevokeAdminCert(ctx context.Context, serial string, at time.Time) error {
	if at.IsZero() {
		return fmt.Errorf("revoke admin certificate %q: zero time", serial)
	}
	tag, err := t.q.Exec(ctx, `UPDATE admin_certs SET revoked_at = $1 WHERE serial = $2 AND revoked_at = ''`, timetext.FormatOpt(at), serial)
	if err != nil {
		return fmt.Errorf("revoke admin certificate %q: %w", serial, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	if _, err := t.GetAdminCert(ctx, serial); err != nil {
		return err
	}
	return fmt.Errorf("admin certificate %q: already revoked: %w", serial, store.ErrConflict)
}

// scanAdminCert reads a row of adminCertColumns.
func scanAdminCert(s scanner) (store.AdminCert, error) {
	var (
		c                             store.AdminCert
		issuedAt, notAfter, revokedAt string
	)
	if err := s.Scan(&c.Serial, &c.Name, &c.Role, &issuedAt, &notAfter, &revokedAt); err != nil {
		return store.AdminCert{}, err
	}
	var err error
	if c.IssuedAt, err = timetext.ParseOpt(issuedAt); err != nil {
		return store.AdminCert{}, fmt.Errorf("admin certificate %q issued_at: %w", c.Serial, err)
	}
	if c.NotAfter, err = timetext.ParseOpt(notAfter); err != nil {
		return store.AdminCert{}, fmt.Errorf("admin certificate %q not_after: %w", c.Serial, err)
	}
	if c.RevokedAt, err = timetext.ParseOpt(revokedAt); err != nil {
		return store.AdminCert{}, fmt.Errorf("admin certificate %q revoked_at: %w", c.Serial, err)
	}
	return c, nil
}
