package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshroot/meshroot/store"
)

// MaxBundleSize bounds a SPIFFE bundle document meshroot accepts, from a
// peer or from an operator.
const MaxBundleSize = 1 << 20

// FederatedBundle is the last good bundle of a foreign trust domain.
type FederatedBundle struct {
	TrustDomain string
	Roots       []*x509.Certificate
	Sequence    uint64
}

// AddFederationRequest registers a foreign trust domain to federate with.
type AddFederationRequest struct {
	TrustDomain string
	// URL is the peer's bundle endpoint (https).
	URL     string
	Profile store.FederationProfile
	// EndpointSPIFFEID is what an https_spiffe endpoint must present.
	EndpointSPIFFEID string
	// BootstrapBundle (SPIFFE bundle JSON, or PEM certificates) is trusted
	// for the peer until its first fetch; required for https_spiffe.
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
	} else if own == td.Name() {
		return store.FederationPeer{}, refusef("%s is this trust domain: federate with foreign ones only", own)
	}
	u, err := url.Parse(req.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" || len(req.URL) > 2048 {
		return store.FederationPeer{}, refusef("bundle endpoint URL %q is invalid: want https://host[:port]/path", req.URL)
	}
	p := store.FederationPeer{TrustDomain: td.Name(), URL: req.URL, Profile: req.Profile, CreatedAt: s.now().UTC()}
	switch req.Profile {
	case store.ProfileHTTPSWeb:
		if req.EndpointSPIFFEID != "" {
			return store.FederationPeer{}, refusef("--endpoint-spiffe-id is for the https_spiffe profile only")
		}
	case store.ProfileHTTPSSPIFFE:
		id, err := spiffeid.FromString(req.EndpointSPIFFEID)
		if err != nil {
			return store.FederationPeer{}, refusef("https_spiffe needs the endpoint's SPIFFE ID (--endpoint-spiffe-id): %v", err)
		}
		p.EndpointSPIFFEID = id.String()
		if len(req.BootstrapBundle) == 0 {
			return store.FederationPeer{}, refusef("https_spiffe needs a bootstrap bundle (--bootstrap-bundle) to authenticate the endpoint the first time")
		}
	default:
		return store.FederationPeer{}, refusef("profile %q is unknown: use https_web or https_spiffe", req.Profile)
	}
	if len(req.BootstrapBundle) > 0 {
		b, err := ParseBundleDocument(td, req.BootstrapBundle)
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

// ParseBundleDocument reads a bundle for td given as a SPIFFE bundle
// document (JSON) or as PEM certificates, bounded and non-empty.
func ParseBundleDocument(td spiffeid.TrustDomain, data []byte) (*spiffebundle.Bundle, error) {
	if len(data) > MaxBundleSize {
		return nil, fmt.Errorf("bundle is %d bytes: at most %d", len(data), MaxBundleSize)
	}
	trimmed := bytes.TrimSpace(data)
	var b *spiffebundle.Bundle
	if strings.HasPrefix(string(trimmed), "-----BEGIN") {
		certs, err := ParseCerts(trimmed)
		if err != nil {
			return nil, err
		}
		b = spiffebundle.FromX509Authorities(td, certs)
	} else {
		var err error
		if b, err = spiffebundle.Parse(td, trimmed); err != nil {
			return nil, fmt.Errorf("not a SPIFFE bundle document or PEM: %v", err)
		}
	}
	if len(b.X509Authorities()) == 0 {
		return nil, errors.New("the bundle has no X.509 authorities")
	}
	return b, nil
}

// RemoveFederation stops federating with a trust domain; its bundle leaves
// the meshes at the agents' next update.
func (s *Service) RemoveFederation(ctx context.Context, trustDomain string) error {
	actor := ActorFrom(ctx)
	err := s.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.DeleteFederationPeer(ctx, trustDomain); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return refusef("not federating with %s: see `meshroot federation list`", trustDomain)
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

// FederatedBundles returns the last good bundle of every peer that has one.
func (s *Service) FederatedBundles(ctx context.Context) ([]FederatedBundle, error) {
	peers, err := s.store.ListFederationPeers(ctx)
	if err != nil {
		return nil, err
	}
	var out []FederatedBundle
	for _, p := range peers {
		if len(p.Bundle) == 0 {
			continue
		}
		fb, err := s.parseFederated(p)
		if err != nil {
			return nil, err
		}
		if fb != nil {
			out = append(out, *fb)
		}
	}
	return out, nil
}

// parseFederated parses a peer's stored bundle, once per stored version:
// the bundle hub asks for every bundle every few seconds.
func (s *Service) parseFederated(p store.FederationPeer) (*FederatedBundle, error) {
	key := p.TrustDomain + "|" + p.BundleUpdatedAt.String() + "|" + fmt.Sprint(p.Sequence, len(p.Bundle))
	s.mu.Lock()
	cached, ok := s.federated[key]
	s.mu.Unlock()
	if ok {
		return cached, nil
	}
	td, err := spiffeid.TrustDomainFromString(p.TrustDomain)
	if err != nil {
		return nil, nil
	}
	b, err := spiffebundle.Parse(td, p.Bundle)
	if err != nil {
		return nil, fmt.Errorf("stored bundle of %s: %w", p.TrustDomain, err)
	}
	fb := &FederatedBundle{TrustDomain: p.TrustDomain, Roots: b.X509Authorities(), Sequence: p.Sequence}
	s.mu.Lock()
	if len(s.federated) > 1024 {
		s.federated = map[string]*FederatedBundle{}
	}
	s.federated[key] = fb
	s.mu.Unlock()
	return fb, nil
}
