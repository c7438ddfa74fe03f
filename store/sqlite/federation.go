package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/meshroot/meshroot/store"
)

const federationPeerColumns = `trust_domain, url, profile, endpoint_spiffe_id, created_at,
	bundle, sequence, bundle_updated_at,
	last_attempt, last_success, last_error, next_attempt`

// GetFederationPeer returns the federation peer for trustDomain.
func (r reader) GetFederationPeer(ctx context.Context, trustDomain string) (store.FederationPeer, error) {
	p, err := scanFederationPeer(r.q.QueryRowContext(ctx,
		`SELECT `+federationPeerColumns+` FROM federation_peers WHERE trust_domain = ?`, trustDomain))
	if errors.Is(err, sql.ErrNoRows) {
		return store.FederationPeer{}, fmt.Errorf("federation peer %q: %w", trustDomain, store.ErrNotFound)
	}
	if err != nil {
		return store.FederationPeer{}, fmt.Errorf("get federation peer %q: %w", trustDomain, err)
	}
	return p, nil
}

// ListFederationPeers returns every federation peer ordered by trust domain
// (byte order).
func (r reader) ListFederationPeers(ctx context.Context) ([]store.FederationPeer, error) {
	peers, err := listRows(ctx, r.q, scanFederationPeer,
		`SELECT `+federationPeerColumns+` FROM federation_peers ORDER BY trust_domain`)
	if err != nil {
		return nil, fmt.Errorf("list federation peers: %w", err)
	}
	return peers, nil
}

// CreateFederationPeer adds p with its bundle, sequence and status. It fails
// with store.ErrAlreadyExists when a peer for the same trust domain exists.
//
// A Bundle with no bytes (nil or empty) is stored as NULL and reads back as
// nil. Zero times read back as zero.
func (t *tx) CreateFederationPeer(ctx context.Context, p store.FederationPeer) error {
	if p.TrustDomain == "" {
		return errors.New("create federation peer: empty trust domain")
	}
	seq, err := bundleSequenceColumn(p.Sequence)
	if err != nil {
		return fmt.Errorf("create federation peer %q: %w", p.TrustDomain, err)
	}
	_, err = t.q.ExecContext(ctx, `INSERT INTO federation_peers (`+federationPeerColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		p.TrustDomain, p.URL, string(p.Profile), p.EndpointSPIFFEID, formatOptTime(p.CreatedAt),
		bundleColumn(p.Bundle), seq, formatOptTime(p.BundleUpdatedAt),
		formatOptTime(p.Status.LastAttempt), formatOptTime(p.Status.LastSuccess), p.Status.LastError, formatOptTime(p.Status.NextAttempt))
	switch {
	case isUniqueViolation(err):
		return fmt.Errorf("federation peer %q: %w", p.TrustDomain, store.ErrAlreadyExists)
	case err != nil:
		return fmt.Errorf("create federation peer %q: %w", p.TrustDomain, err)
	}
	return nil
}

// DeleteFederationPeer removes the federation peer for trustDomain, its
// bundle included. It fails with store.ErrNotFound when there is none.
func (t *tx) DeleteFederationPeer(ctx context.Context, trustDomain string) error {
	res, err := t.q.ExecContext(ctx, `DELETE FROM federation_peers WHERE trust_domain = ?`, trustDomain)
	if err != nil {
		return fmt.Errorf("delete federation peer %q: %w", trustDomain, err)
	}
	return mustAffect(res, "federation peer", trustDomain)
}

// SetFederatedBundle replaces the bundle of the federation peer for
// trustDomain with bundle and its sequence, changed at at; the peer's
// Status is left as it is. It fails with store.ErrNotFound when there is no
// such peer. A bundle with no bytes is stored as NULL and reads back as nil.
func (t *tx) SetFederatedBundle(ctx context.Context, trustDomain string, bundle []byte, sequence uint64, at time.Time) error {
	seq, err := bundleSequenceColumn(sequence)
	if err != nil {
		return fmt.Errorf("set federated bundle of %q: %w", trustDomain, err)
	}
	res, err := t.q.ExecContext(ctx,
		`UPDATE federation_peers SET bundle = ?, sequence = ?, bundle_updated_at = ? WHERE trust_domain = ?`,
		bundleColumn(bundle), seq, formatOptTime(at), trustDomain)
	if err != nil {
		return fmt.Errorf("set federated bundle of %q: %w", trustDomain, err)
	}
	return mustAffect(res, "federation peer", trustDomain)
}

// UpdateFederationStatus replaces the status of the federation peer for
// trustDomain with st; its bundle is left as it is. It fails with
// store.ErrNotFound when there is no such peer.
func (t *tx) UpdateFederationStatus(ctx context.Context, trustDomain string, st store.FederationStatus) error {
	res, err := t.q.ExecContext(ctx,
		`UPDATE federation_peers SET last_attempt = ?, last_success = ?, last_error = ?, next_attempt = ? WHERE trust_domain = ?`,
		formatOptTime(st.LastAttempt), formatOptTime(st.LastSuccess), st.LastError, formatOptTime(st.NextAttempt), trustDomain)
	if err != nil {
		return fmt.Errorf("update federation peer %q status: %w", trustDomain, err)
	}
	return mustAffect(res, "federation peer", trustDomain)
}

// scanFederationPeer reads a row of federationPeerColumns.
func scanFederationPeer(s scanner) (store.FederationPeer, error) {
	var (
		p                                     store.FederationPeer
		profile                               string
		createdAt, bundleUpdatedAt            string
		lastAttempt, lastSuccess, nextAttempt string
		seq                                   int64
	)
	if err := s.Scan(&p.TrustDomain, &p.URL, &profile, &p.EndpointSPIFFEID, &createdAt,
		&p.Bundle, &seq, &bundleUpdatedAt,
		&lastAttempt, &lastSuccess, &p.Status.LastError, &nextAttempt); err != nil {
		return store.FederationPeer{}, err
	}
	p.Profile = store.FederationProfile(profile)
	if len(p.Bundle) == 0 {
		p.Bundle = nil // NULL, or an empty blob written outside the store
	}
	if seq < 0 {
		return store.FederationPeer{}, fmt.Errorf("federation peer %q sequence: stored value %d is negative", p.TrustDomain, seq)
	}
	p.Sequence = uint64(seq)
	var err error
	if p.CreatedAt, err = parseOptTime(createdAt); err != nil {
		return store.FederationPeer{}, fmt.Errorf("federation peer %q created_at: %w", p.TrustDomain, err)
	}
	if p.BundleUpdatedAt, err = parseOptTime(bundleUpdatedAt); err != nil {
		return store.FederationPeer{}, fmt.Errorf("federation peer %q bundle_updated_at: %w", p.TrustDomain, err)
	}
	if p.Status.LastAttempt, err = parseOptTime(lastAttempt); err != nil {
		return store.FederationPeer{}, fmt.Errorf("federation peer %q last_attempt: %w", p.TrustDomain, err)
	}
	if p.Status.LastSuccess, err = parseOptTime(lastSuccess); err != nil {
		return store.FederationPeer{}, fmt.Errorf("federation peer %q last_success: %w", p.TrustDomain, err)
	}
	if p.Status.NextAttempt, err = parseOptTime(nextAttempt); err != nil {
		return store.FederationPeer{}, fmt.Errorf("federation peer %q next_attempt: %w", p.TrustDomain, err)
	}
	return p, nil
}

// bundleColumn returns b as stored in federation_peers.bundle: NULL (an
// untyped nil, which every driver binds as NULL) when b has no bytes.
func bundleColumn(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}
