package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/internal/contactset"
	"github.com/meshroot/meshroot/store/internal/crljson"
	"github.com/meshroot/meshroot/store/internal/istiodjson"
	"github.com/meshroot/meshroot/store/internal/timetext"
)

const clusterColumns = `name, trust_domain, created_at,
	k8s_issuer, k8s_jwks, k8s_oidc_discovery, k8s_ca, k8s_kubeconfig, service_accounts,
	last_contact, bundle_sequence, intermediate_serial, permit_dns, permit_ips, istiod_status, gate, applied_crls`

// GetCluster returns the cluster called name.
func (r reader) GetCluster(ctx context.Context, name string) (store.Cluster, error) {
	c, err := scanCluster(r.q.QueryRow(ctx, `SELECT `+clusterColumns+` FROM clusters WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Cluster{}, fmt.Errorf("cluster %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return store.Cluster{}, fmt.Errorf("get cluster %q: %w", name, err)
	}
	return c, nil
}

// ListClusters returns all clusters ordered by name (byte order).
func (r reader) ListClusters(ctx context.Context) ([]store.Cluster, error) {
	clusters, err := listRows(ctx, r.q, scanCluster, `SELECT `+clusterColumns+` FROM clusters ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list clusters: %w", err)
	}
	return clusters, nil
}

// CreateCluster adds c, with its Auth and Status. It fails with
// store.ErrAlreadyExists when a cluster with the same name exists.
// Auth.ServiceAccounts, PermitDNS and PermitIPs are text arrays; an empty
// list reads back as nil.
func (t *tx) CreateCluster(ctx context.Context, c store.Cluster) error {
	if c.Name == "" {
		return errors.New("create cluster: empty cluster name")
	}
	seq, err := sequenceColumn(c.Status.BundleSequence)
	if err != nil {
		return fmt.Errorf("create cluster %q: bundle sequence: %w", c.Name, err)
	}
	istiod, err := istiodjson.Encode(c.Status.Istiod)
	if err != nil {
		return fmt.Errorf("create cluster %q: %w", c.Name, err)
	}
	applied, err := crljson.Encode(c.Status.AppliedCRLs)
	if err != nil {
		return fmt.Errorf("create cluster %q: %w", c.Name, err)
	}
	tag, err := t.q.Exec(ctx, `INSERT INTO clusters (`+clusterColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) ON CONFLICT DO NOTHING`,
		c.Name, c.TrustDomain, timetext.Format(c.CreatedAt),
		c.Auth.Issuer, nonNil(c.Auth.JWKS), c.Auth.OIDCDiscovery, nonNil(c.Auth.CAPEM), nonNil(c.Auth.Kubeconfig), textArray(c.Auth.ServiceAccounts),
		timetext.FormatOpt(c.Status.LastContact), seq, c.Status.IntermediateSerial, textArray(c.PermitDNS), textArray(c.PermitIPs), istiod, c.Status.Gate, applied)
	switch {
	case err != nil:
		return fmt.Errorf("create cluster %q: %w", c.Name, err)
	case tag.RowsAffected() == 0:
		return fmt.Errorf("cluster %q: %w", c.Name, store.ErrAlreadyExists)
	}
	return nil
}

// UpdateClusterStatus replaces the status of the cluster called name with
// st. It fails with store.ErrNotFound when there is no such cluster.
func (t *tx) UpdateClusterStatus(ctx context.Context, name string, st store.ClusterStatus) error {
	seq, err := sequenceColumn(st.BundleSequence)
	if err != nil {
		return fmt.Errorf("update cluster %q status: bundle sequence: %w", name, err)
	}
	istiod, err := istiodjson.Encode(st.Istiod)
	if err != nil {
		return fmt.Errorf("update cluster %q status: %w", name, err)
	}
	applied, err := crljson.Encode(st.AppliedCRLs)
	if err != nil {
		return fmt.Errorf("update cluster %q status: %w", name, err)
	}
	tag, err := t.q.Exec(ctx,
		`UPDATE clusters SET last_contact = $1, bundle_sequence = $2, intermediate_serial = $3, istiod_status = $4, gate = $5, applied_crls = $6 WHERE name = $7`,
		timetext.FormatOpt(st.LastContact), seq, st.IntermediateSerial, istiod, st.Gate, applied, name)
	if err != nil {
		return fmt.Errorf("update cluster %q status: %w", name, err)
	}
	return affected(tag, "cluster", name)
}

// RecordContact merges a status report into the cluster's status while
// its registration is the one created at createdAt (store.ClusterWriter):
// one UPDATE, which a status report of each cluster at every change of
// the fleet makes the server's most frequent write.
func (t *tx) RecordContact(ctx context.Context, name string, createdAt time.Time, st store.ClusterStatus) error {
	q, args, err := contactset.Statement(st, name, createdAt, func(n int) string { return "$" + strconv.Itoa(n) })
	if err != nil {
		return fmt.Errorf("record contact of cluster %q: %w", name, err)
	}
	tag, err := t.q.Exec(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("record contact of cluster %q: %w", name, err)
	}
	return affected(tag, "cluster registered at "+timetext.Format(createdAt), name)
}

// DeleteCluster removes the cluster called name and, in the same
// transaction, its join tokens. Intermediates issued to it stay on record.
func (t *tx) DeleteCluster(ctx context.Context, name string) error {
	if _, err := t.q.Exec(ctx, `DELETE FROM join_tokens WHERE cluster = $1`, name); err != nil {
		return fmt.Errorf("delete cluster %q: delete its join tokens: %w", name, err)
	}
	tag, err := t.q.Exec(ctx, `DELETE FROM clusters WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("delete cluster %q: %w", name, err)
	}
	return affected(tag, "cluster", name)
}

// scanCluster reads a row of clusterColumns.
func scanCluster(s scanner) (store.Cluster, error) {
	var (
		c                      store.Cluster
		createdAt, lastContact string
		istiod, applied        string
		seq                    int64
	)
	if err := s.Scan(&c.Name, &c.TrustDomain, &createdAt,
		&c.Auth.Issuer, &c.Auth.JWKS, &c.Auth.OIDCDiscovery, &c.Auth.CAPEM, &c.Auth.Kubeconfig, &c.Auth.ServiceAccounts,
		&lastContact, &seq, &c.Status.IntermediateSerial, &c.PermitDNS, &c.PermitIPs, &istiod, &c.Status.Gate, &applied); err != nil {
		return store.Cluster{}, err
	}
	var err error
	if c.Status.Istiod, err = istiodjson.Decode(istiod); err != nil {
		return store.Cluster{}, fmt.Errorf("cluster %q istiod_status: %w", c.Name, err)
	}
	if c.Status.AppliedCRLs, err = crljson.Decode(applied); err != nil {
		return store.Cluster{}, fmt.Errorf("cluster %q applied_crls: %w", c.Name, err)
	}
	for _, list := range []*[]string{&c.Auth.ServiceAccounts, &c.PermitDNS, &c.PermitIPs} {
		if len(*list) == 0 {
			*list = nil
		}
	}
	if c.CreatedAt, err = timetext.Parse(createdAt); err != nil {
		return store.Cluster{}, fmt.Errorf("cluster %q created_at: %w", c.Name, err)
	}
	if c.Status.LastContact, err = timetext.ParseOpt(lastContact); err != nil {
		return store.Cluster{}, fmt.Errorf("cluster %q last_contact: %w", c.Name, err)
	}
	if c.Status.BundleSequence, err = sequenceValue("cluster "+c.Name+" bundle_sequence", seq); err != nil {
		return store.Cluster{}, err
	}
	return c, nil
}

// textArray returns list for a NOT NULL text array column: an empty array
// when list is nil.
func textArray(list []string) []string {
	if list == nil {
		return []string{}
	}
	return list
}
