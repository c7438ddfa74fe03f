package ca

import (
	"context"
	"errors"
	"net/url"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshroot/meshroot/federation/bundle"
	"github.com/meshroot/meshroot/store"
)

// AddFederationRequest registers a foreign trust domain to federate with.
type AddFederationRequest struct {
	TrustDomain string
	// URL is the peer's bundle endpoint (https).
	URL     string
	Profile store.FederationProfile
	// EndpointSPIFFEID is what an https_spiffe endpoint must present.
	EndpointSPIFFEID string
	// BootstrapBundle (SPIFFE bundle JSON, or PEM certificates) is trusted
	// for the peer until its first fetch; required for https_spiffe. It
	// goes through bundle.Parse like every fetched bundle (PEM allowed), so
	// it gets the same trust-domain and size checks.
	BootstrapBundle []byte
}

// AddFederation registers a federation peer. The federation watcher picks
// it up and fetches its bundle.
func (s *Service) AddFederation(ctx context.Context, req AddFederationRequest) (store.FederationPeer, error) {
	actor := ActorFrom(ctx)
	p, err := s.addFederation(ctx, actor, req)
	if err != nil {
		return store.FederationPeer{}, s.auditRefusal(ctx, actor, "federation.add", req.TrustDomain, err)
	}
	return p, nil
}

func (s *Service) addFederation(ctx context.Context, actor Actor, req AddFederationRequest) (store.FederationPeer, error) {
	td, err := ParseTrustDomain(req.TrustDomain)
	if err != nil {
		return store.FederationPeer{}, refuse(err)
	}
	if own, err := s.store.Meta(ctx, MetaTrustDomain); err != nil {
		return store.FederationPeer{}, err
	} else if err := refuseOwnTrustDomain(td.Name(), own); err != nil {
		return store.FederationPeer{}, err
	}
	u, err := url.Parse(req.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" || len(req.URL) > 2048 {
		return store.FederationPeer{}, refusef("bundle endpoint URL %q is invalid: want https://host[:port]/path", req.URL)
	}
	p := store.FederationPeer{TrustDomain: td.Name(), URL: req.URL, Profile: req.Profile, CreatedAt: s.now().UTC()}
	switch req.Profile {
	case store.ProfileHTTPSWeb:
		if req.EndpointSPIFFEID != "" {
			return store.FederationPeer{}, refusef("an endpoint SPIFFE ID is for the https_spiffe profile only")
		}
	case store.ProfileHTTPSSPIFFE:
		id, err := spiffeid.FromString(req.EndpointSPIFFEID)
		if err != nil {
			return store.FederationPeer{}, refusef("https_spiffe needs the endpoint's SPIFFE ID: %v", err)
		}
		p.EndpointSPIFFEID = id.String()
		if len(req.BootstrapBundle) == 0 {
			return store.FederationPeer{}, refusef("https_spiffe needs a bootstrap bundle to authenticate the endpoint the first time")
		}
	default:
		return store.FederationPeer{}, refusef("profile %q is unknown: use https_web or https_spiffe", req.Profile)
	}
	if len(req.BootstrapBundle) > 0 {
		b, err := bundle.Parse(td, req.BootstrapBundle, bundle.Options{AllowPEM: true})
		if err != nil {
			return store.FederationPeer{}, refusef("bootstrap bundle: %w", err)
		}
		if p.Bundle, err = b.Marshal(); err != nil {
			return store.FederationPeer{}, err
		}
		p.Sequence, _ = b.SequenceNumber()
		p.BundleUpdatedAt = p.CreatedAt
	}
	err = s.store.Update(ctx, func(tx store.Tx) error {
		// Re-checked inside the transaction: a root may have been
		// created since the check above.
		if own, err := tx.Meta(ctx, MetaTrustDomain); err != nil {
			return err
		} else if err := refuseOwnTrustDomain(p.TrustDomain, own); err != nil {
			return err
		}
		if err := tx.CreateFederationPeer(ctx, p); err != nil {
			if errors.Is(err, store.ErrAlreadyExists) {
				return refusef("already federating with %s: remove it first to change it", p.TrustDomain)
			}
			return err
		}
		return s.audit(ctx, tx, actor, "federation.add", p.TrustDomain, "ok", map[string]any{
			"url": p.URL, "profile": string(p.Profile), "endpoint_spiffe_id": p.EndpointSPIFFEID, "bootstrap_bundle": len(p.Bundle) > 0,
		})
	})
	return p, err
}

// refuseOwnTrustDomain refuses a federation peer for trust domain own:
// a peer may never supply roots for this trust domain. While own is not
// known yet ("", no root), the peer is allowed; creating the first root
// checks again (refuseFederatedTrustDomain) and the hub never delivers a
// peer of its own trust domain.
func refuseOwnTrustDomain(peer, own string) error {
	if own != "" && peer == own {
		return refusef("%s is this trust domain: federate with foreign ones only", own)
	}
	return nil
}

// refuseFederatedTrustDomain refuses to make td this trust domain while a
// federation peer of that name exists: the peer would supply roots for our
// own trust domain. Root creation calls it before generating a key (so a
// refusal leaves no orphan key) and again inside the transaction that
// stores the root (r is then that transaction).
func refuseFederatedTrustDomain(ctx context.Context, r rotationReader, td string) error {
	_, err := r.GetFederationPeer(ctx, td)
	switch {
	case err == nil:
		return refusef("a federation peer for %s exists: a peer may not supply roots for this trust domain; remove the peer first, or choose another trust domain", td)
	case errors.Is(err, store.ErrNotFound):
		return nil
	default:
		return err
	}
}

// RemoveFederation stops federating with a trust domain; its bundle leaves
// the meshes at the agents' next update.
func (s *Service) RemoveFederation(ctx context.Context, trustDomain string) error {
	actor := ActorFrom(ctx)
	err := s.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.DeleteFederationPeer(ctx, trustDomain); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return refusef("not federating with %s: no such federation peer", trustDomain)
			}
			return err
		}
		return s.audit(ctx, tx, actor, "federation.remove", trustDomain, "ok", nil)
	})
	if err != nil {
		var pe *PolicyError
		if errors.As(err, &pe) {
			return s.auditRefusal(ctx, actor, "federation.remove", trustDomain, err)
		}
	}
	return err
}

// ListFederation returns every federation peer with its status.
func (s *Service) ListFederation(ctx context.Context) ([]store.FederationPeer, error) {
	return s.store.ListFederationPeers(ctx)
}
