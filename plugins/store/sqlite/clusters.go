package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/meshroot/meshroot/plugins/store"
)

const clusterColumns = `name, trust_domain, created_at`

// GetCluster returns the cluster called name.
func (r reader) GetCluster(ctx context.Context, name string) (store.Cluster, error) {
	c, err := scanCluster(r.q.QueryRowContext(ctx, `SELECT `+clusterColumns+` FROM clusters WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Cluster{}, fmt.Errorf("cluster %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return store.Cluster{}, fmt.Errorf("get cluster %q: %w", name, err)
	}
	return c, nil
}

// ListClusters returns all clusters ordered by name.
func (r reader) ListClusters(ctx context.Context) ([]store.Cluster, error) {
	clusters, err := listRows(ctx, r.q, scanCluster, `SELECT `+clusterColumns+` FROM clusters ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list clusters: %w", err)
	}
	return clusters, nil
}

// CreateCluster adds c. It fails with store.ErrAlreadyExists when a cluster
// with the same name exists.
func (t *tx) CreateCluster(ctx context.Context, c store.Cluster) error {
	if c.Name == "" {
		return errors.New("create cluster: empty cluster name")
	}
	_, err := t.q.ExecContext(ctx, `INSERT INTO clusters (`+clusterColumns+`) VALUES (?, ?, ?)`,
		c.Name, c.TrustDomain, formatTime(c.CreatedAt))
	switch {
	case isUniqueViolation(err):
		return fmt.Errorf("cluster %q: %w", c.Name, store.ErrAlreadyExists)
	case err != nil:
		return fmt.Errorf("create cluster %q: %w", c.Name, err)
	}
	return nil
}

// DeleteCluster removes the cluster called name. Intermediates issued to it
// stay on record.
func (t *tx) DeleteCluster(ctx context.Context, name string) error {
	res, err := t.q.ExecContext(ctx, `DELETE FROM clusters WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("delete cluster %q: %w", name, err)
	}
	return mustAffect(res, "cluster", name)
}

// scanCluster reads a row of clusterColumns.
func scanCluster(s scanner) (store.Cluster, error) {
	var (
		c         store.Cluster
		createdAt string
	)
	if err := s.Scan(&c.Name, &c.TrustDomain, &createdAt); err != nil {
		return store.Cluster{}, err
	}
	var err error
	if c.CreatedAt, err = parseTime(createdAt); err != nil {
		return store.Cluster{}, fmt.Errorf("cluster %q created_at: %w", c.Name, err)
	}
	return c, nil
}
