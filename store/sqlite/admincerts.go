package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/meshroot/meshroot/store"
)

const adminCertColumns = `serial, name, role, issued_at, not_after, revoked_at`

// GetAdminCert returns the admin client certificate record of serial.
func (r reader) GetAdminCert(ctx context.Context, serial string) (store.AdminCert, error) {
	c, err := scanAdminCert(r.q.QueryRowContext(ctx, `SELECT `+adminCertColumns+` FROM admin_certs WHERE serial = ?`, serial))
	if errors.Is(err, sql.ErrNoRows) {
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
// record with the same serial exists.
func (t *tx) CreateAdminCert(ctx context.Context, c store.AdminCert) error {
	if c.Serial == "" {
		return errors.New("create admin certificate: empty serial")
	}
	_, err := t.q.ExecContext(ctx, `INSERT INTO admin_certs (`+adminCertColumns+`) VALUES (?, ?, ?, ?, ?, ?)`,
		c.Serial, c.Name, c.Role, formatOptTime(c.IssuedAt), formatOptTime(c.NotAfter), formatOptTime(c.RevokedAt))
	switch {
	case isUniqueViolation(err):
		return fmt.Errorf("admin certificate %q: %w", c.Serial, store.ErrAlreadyExists)
	case err != nil:
		return fmt.Errorf("create admin certificate %q: %w", c.Serial, err)
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
	res, err := t.q.ExecContext(ctx, `UPDATE admin_certs SET revoked_at = ? WHERE serial = ? AND revoked_at = ''`, formatOptTime(at), serial)
	if err != nil {
		return fmt.Errorf("revoke admin certificate %q: %w", serial, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return err
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
	if c.IssuedAt, err = parseOptTime(issuedAt); err != nil {
		return store.AdminCert{}, err
	}
	if c.NotAfter, err = parseOptTime(notAfter); err != nil {
		return store.AdminCert{}, err
	}
	if c.RevokedAt, err = parseOptTime(revokedAt); err != nil {
		return store.AdminCert{}, err
	}
	return c, nil
}
