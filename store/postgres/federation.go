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

const federationPeerColumns = `trust_domain, url, profile, endpoint_spiffe_id, created_at,
	bundle, sequence, bundle_updated_at,
	last_attempt, last_success, last_error, next_attempt`

// GetFederationPeer returns the federation peer for trustDomain.
func (r reader) GetFederationPeer(ctx context.Context, trustDomain string) (store.FederationPeer, error) {
	p, err := scanFederationPeer(r.q.QueryRow(ctx,
		`SELECT `+federationPeerColumns+` FROM federation_peers WHERE trust_domain = $1`, trustDomain))
	if errors.Is(err, pgx.ErrNoRows) {
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
// A Bundle with no bytes is stored as NULL and reads back as nil.
func (t *tx) CreateFederationPeer(ctx context.Context, p store.FederationPeer) error {
	if p.TrustDomain == "" {
		return errors.New("create federation peer: empty trust domain")
	}
	seq, err := sequenceColumn(p.Sequence)
	if err != nil {
		return fmt.Errorf("create federation peer %q: %w", p.TrustDomain, err)
	}
	tag, err := t.q.Exec(ctx, `INSERT INTO federation_peers (`+federationPeerColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING`,
		p.TrustDomain, p.URL, string(p.Profile), p.EndpointSPIFFEID, timetext.FormatOpt(p.CreatedAt),
		bundleColumn(p.Bundle), seq, timetext.FormatOpt(p.BundleUpdatedAt),
		timetext.FormatOpt(p.Status.LastAttempt), timetext.FormatOpt(p.Status.LastSuccess), p.Status.LastError, timetext.FormatOpt(p.Status.NextAttempt))
	switch {
	case err != nil:
		return fmt.Errorf("create federation peer %q: %w", p.TrustDomain, err)
	case tag.RowsAffected() == 0:
		return fmt.Errorf("federation peer %q: %w", p.TrustDomain, store.ErrAlreadyExists)
	}
	return nil
}

// DeleteFederationPeer removes the federation peer for trustDomain, its
// bundle included. It fails with store.ErrNotFound when there is none.
func (t *tx) DeleteFederationPeer(ctx context.Context, trustDomain string) error {
	tag, err := t.q.Exec(ctx, `DELETE FROM federation_peers WHERE trust_domain = $1`, trustDomain)
	if err != nil {
		return fmt.Errorf("delete federation peer %q: %w", trustDomain, err)
	}
	return affected(tag, "federation peer", trustDomain)
}

// SetFederatedBundle replaces the bundle of the federation peer for
// trustDomain with bundle and its sequence, changed at at; the peer's
// Status is left as it is. It fails with store.ErrNotFound when there is no
// such peer.
func (t *tx) SetFederatedBundle(ctx context.Context, trustDomain string, bundle []byte, sequence uint64, at time.Time) error {
	seq, err := sequenceColumn(sequence)
	if err != nil {
		return fmt.Errorf("set federated bundle of %q: %w", trustDomain, err)
	}
	tag, err := t.q.Exec(ctx,
		`UPDATE federation_peers SET bundle = $1, sequence = $2, bundle_updated_at = $3 WHERE trust_domain = $4`,
		bundleColumn(bundle), seq, timetext.FormatOpt(at), trustDomain)
	if err != nil {
		return fmt.Errorf("set federated bundle of %q: %w", trustDomain, err)
	}
	return affected(tag, "federation peer", trustDomain)
}

// UpdateFederationStatus replaces the status of the federation peer for
// trustDomain with st; its bundle is left as it is. It fails with
// store.ErrNotFound when there is no such peer.
func (t *tx) UpdateFederationStatus(ctx context.Context, trustDomain string, st store.FederationStatus) error {
	tag, err := t.q.Exec(ctx,
		`UPDATE federation_peers SET last_attempt = $1, last_success = $2, last_error = $3, next_attempt = $4 WHERE trust_domain = $5`,
		timetext.FormatOpt(st.LastAttempt), timetext.FormatOpt(st.LastSuccess), st.LastError, timetext.FormatOpt(st.NextAttempt), trustDomain)
	if err != nil {
		return fmt.Errorf("update federation peer %q status: %w", trustDomain, err)
	}
	return affected(tag, "federation peer", trustDomain)
}

// scanFederationPeer reads a row of federationPeerColumns.
func scanFederationPeer(s scanner) (store.FederationPeer, error) {
	var (
		p                                                         store.FederationPeer
		profile, createdAt, updatedAt, attempt, success, nextTime string
		seq                                                       int64
	)
	if err := s.Scan(&p.TrustDomain, &p.URL, &profile, &p.EndpointSPIFFEID, &createdAt,
		&p.Bundle, &seq, &updatedAt, &attempt, &success, &p.Status.LastError, &nextTime); err != nil {
		return store.FederationPeer{}, err
	}
	p.Profile = store.FederationProfile(profile)
	if len(p.Bundle) == 0 {
		p.Bundle = nil
	}
	var err error
	if p.Sequence, err = sequenceValue("federation peer "+p.TrustDomain+" sequence", seq); err != nil {
		return store.FederationPeer{}, err
	}
	for _, f := range []struct {
		dst  *time.Time
		src  string
		name string
	}{
		{&p.CreatedAt, createdAt, "created_at"}, {&p.BundleUpdatedAt, updatedAt, "bundle_updated_at"},
		{&p.Status.LastAttempt, attempt, "last_attempt"}, {&p.Status.LastSuccess, success, "last_success"},
		{&p.Status.NextAttempt, nextTime, "next_attempt"},
	} {
		if *f.dst, err = timetext.ParseOpt(f.src); err != nil {
			return store.FederationPeer{}, fmt.Errorf("federation peer %q %s: %w", p.TrustDomain, f.name, err)
		}
	}
	return p, nil
}

// bundleColumn returns b as stored in federation_peers.bundle: NULL when b
// has no bytes.
func bundleColumn(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}
