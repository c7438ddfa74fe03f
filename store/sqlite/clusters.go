package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/internal/contactset"
	"github.com/meshroot/meshroot/store/internal/crljson"
	"github.com/meshroot/meshroot/store/internal/istiodjson"
)

const clusterColumns = `name, trust_domain, created_at,
	k8s_issuer, k8s_jwks, k8s_oidc_discovery, k8s_ca, k8s_kubeconfig, service_accounts,
	last_contact, bundle_sequence, intermediate_serial, permit_dns, permit_ips, istiod_status, gate, applied_crls`

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

// CreateCluster adds c, with its Auth and Status. It fails with
// store.ErrAlreadyExists when a cluster with the same name exists.
//
// Auth.ServiceAccounts is stored as a JSON array; an empty list (nil or
// not) reads back as nil. A zero Status.LastContact reads back as zero.
func (t *tx) CreateCluster(ctx context.Context, c store.Cluster) error {
	if c.Name == "" {
		return errors.New("create cluster: empty cluster name")
	}
	accounts, err := encodeServiceAccounts(c.Auth.ServiceAccounts)
	if err != nil {
		return fmt.Errorf("create cluster %q: %w", c.Name, err)
	}
	seq, err := bundleSequenceColumn(c.Status.BundleSequence)
	if err != nil {
		return fmt.Errorf("create cluster %q: %w", c.Name, err)
	}
	permitDNS, err := encodeServiceAccounts(c.PermitDNS)
	if err != nil {
		return fmt.Errorf("create cluster %q: permitted DNS domains: %w", c.Name, err)
	}
	permitIPs, err := encodeServiceAccounts(c.PermitIPs)
	if err != nil {
		return fmt.Errorf("create cluster %q: permitted IP ranges: %w", c.Name, err)
	}
	istiod, err := istiodjson.Encode(c.Status.Istiod)
	if err != nil {
		return fmt.Errorf("create cluster %q: %w", c.Name, err)
	}
	applied, err := crljson.Encode(c.Status.AppliedCRLs)
	if err != nil {
		return fmt.Errorf("create cluster %q: %w", c.Name, err)
	}
	_, err = t.q.ExecContext(ctx, `INSERT INTO clusters (`+clusterColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.Name, c.TrustDomain, formatTime(c.CreatedAt),
		c.Auth.Issuer, nonNil(c.Auth.JWKS), c.Auth.OIDCDiscovery, nonNil(c.Auth.CAPEM), nonNil(c.Auth.Kubeconfig), accounts,
		formatOptTime(c.Status.LastContact), seq, c.Status.IntermediateSerial, permitDNS, permitIPs, istiod, c.Status.Gate, applied)
	switch {
	case isUniqueViolation(err):
		return fmt.Errorf("cluster %q: %w", c.Name, store.ErrAlreadyExists)
	case err != nil:
		return fmt.Errorf("create cluster %q: %w", c.Name, err)
	}
	return nil
}

// UpdateClusterStatus replaces the status of the cluster called name with
// st. It fails with store.ErrNotFound when there is no such cluster.
func (t *tx) UpdateClusterStatus(ctx context.Context, name string, st store.ClusterStatus) error {
	seq, err := bundleSequenceColumn(st.BundleSequence)
	if err != nil {
		return fmt.Errorf("update cluster %q status: %w", name, err)
	}
	istiod, err := istiodjson.Encode(st.Istiod)
	if err != nil {
		return fmt.Errorf("update cluster %q status: %w", name, err)
	}
	applied, err := crljson.Encode(st.AppliedCRLs)
	if err != nil {
		return fmt.Errorf("update cluster %q status: %w", name, err)
	}
	res, err := t.q.ExecContext(ctx,
		`UPDATE clusters SET last_contact = ?, bundle_sequence = ?, intermediate_serial = ?, istiod_status = ?, gate = ?, applied_crls = ? WHERE name = ?`,
		formatOptTime(st.LastContact), seq, st.IntermediateSerial, istiod, st.Gate, applied, name)
	if err != nil {
		return fmt.Errorf("update cluster %q status: %w", name, err)
	}
	return mustAffect(res, "cluster", name)
}

// RecordContact merges a status report into the cluster's status while
// its registration is the one created at createdAt (store.ClusterWriter):
// one UPDATE, which a status report of each cluster at every change of
// the fleet makes the server's most frequent write.
func (t *tx) RecordContact(ctx context.Context, name string, createdAt time.Time, st store.ClusterStatus) error {
	q, args, err := contactset.Statement(st, name, createdAt, func(int) string { return "?" })
	if err != nil {
		return fmt.Errorf("record contact of cluster %q: %w", name, err)
	}
	res, err := t.q.ExecContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("record contact of cluster %q: %w", name, err)
	}
	return mustAffect(res, "cluster registered at "+formatTime(createdAt), name)
}

// DeleteCluster removes the cluster called name and, in the same
// transaction, its join tokens. Intermediates issued to it stay on record.
func (t *tx) DeleteCluster(ctx context.Context, name string) error {
	// Tokens first: join_tokens.cluster references the cluster.
	if _, err := t.q.ExecContext(ctx, `DELETE FROM join_tokens WHERE cluster = ?`, name); err != nil {
		return fmt.Errorf("delete cluster %q: delete its join tokens: %w", name, err)
	}
	res, err := t.q.ExecContext(ctx, `DELETE FROM clusters WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("delete cluster %q: %w", name, err)
	}
	return mustAffect(res, "cluster", name)
}

// scanCluster reads a row of clusterColumns.
func scanCluster(s scanner) (store.Cluster, error) {
	var (
		c                      store.Cluster
		createdAt, lastContact string
		accounts               string
		permitDNS, permitIPs   string
		istiod, applied        string
		seq                    int64
	)
	if err := s.Scan(&c.Name, &c.TrustDomain, &createdAt,
		&c.Auth.Issuer, &c.Auth.JWKS, &c.Auth.OIDCDiscovery, &c.Auth.CAPEM, &c.Auth.Kubeconfig, &accounts,
		&lastContact, &seq, &c.Status.IntermediateSerial, &permitDNS, &permitIPs, &istiod, &c.Status.Gate, &applied); err != nil {
		return store.Cluster{}, err
	}
	var err error
	if c.CreatedAt, err = parseTime(createdAt); err != nil {
		return store.Cluster{}, fmt.Errorf("cluster %q created_at: %w", c.Name, err)
	}
	if c.Auth.ServiceAccounts, err = decodeServiceAccounts(accounts); err != nil {
		return store.Cluster{}, fmt.Errorf("cluster %q service_accounts: %w", c.Name, err)
	}
	if c.PermitDNS, err = decodeServiceAccounts(permitDNS); err != nil {
		return store.Cluster{}, fmt.Errorf("cluster %q permit_dns: %w", c.Name, err)
	}
	if c.PermitIPs, err = decodeServiceAccounts(permitIPs); err != nil {
		return store.Cluster{}, fmt.Errorf("cluster %q permit_ips: %w", c.Name, err)
	}
	if c.Status.Istiod, err = istiodjson.Decode(istiod); err != nil {
		return store.Cluster{}, fmt.Errorf("cluster %q istiod_status: %w", c.Name, err)
	}
	if c.Status.AppliedCRLs, err = crljson.Decode(applied); err != nil {
		return store.Cluster{}, fmt.Errorf("cluster %q applied_crls: %w", c.Name, err)
	}
	if c.Status.LastContact, err = parseOptTime(lastContact); err != nil {
		return store.Cluster{}, fmt.Errorf("cluster %q last_contact: %w", c.Name, err)
	}
	if seq < 0 {
		return store.Cluster{}, fmt.Errorf("cluster %q bundle_sequence: stored value %d is negative", c.Name, seq)
	}
	c.Status.BundleSequence = uint64(seq)
	return c, nil
}

// bundleSequenceColumn returns n as stored in clusters.bundle_sequence, a
// signed 64-bit SQLite integer.
func bundleSequenceColumn(n uint64) (int64, error) {
	if n > math.MaxInt64 {
		return 0, fmt.Errorf("bundle sequence %d is larger than the largest storable value %d", n, int64(math.MaxInt64))
	}
	return int64(n), nil
}

// encodeServiceAccounts returns accounts as the JSON array stored in
// clusters.service_accounts ("[]" when empty, never "null"); permit_dns and
// permit_ips are stored the same way.
func encodeServiceAccounts(accounts []string) (string, error) {
	if len(accounts) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal(accounts)
	if err != nil {
		return "", fmt.Errorf("encode service accounts: %w", err)
	}
	return string(b), nil
}

// decodeServiceAccounts parses clusters.service_accounts. An empty array
// is returned as nil.
func decodeServiceAccounts(s string) ([]string, error) {
	if s == "[]" {
		return nil, nil // what encodeServiceAccounts stores for none
	}
	var accounts []string
	if err := json.Unmarshal([]byte(s), &accounts); err != nil {
		return nil, fmt.Errorf("stored value %q is not a JSON array of strings: %w", s, err)
	}
	if len(accounts) == 0 {
		return nil, nil
	}
	return accounts, nil
}
