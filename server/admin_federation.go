package server

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// Refresher fetches a federation peer's bundle now.
type Refresher interface {
	Refresh(trustDomain string)
}

// FederationPeerToProto converts a stored federation peer.
func FederationPeerToProto(p store.FederationPeer) *meshrootv1.FederationPeer {
	return &meshrootv1.FederationPeer{
		TrustDomain: p.TrustDomain, Url: p.URL, Profile: string(p.Profile), EndpointSpiffeId: p.EndpointSPIFFEID,
		CreatedAt: ts(p.CreatedAt), Bundle: p.Bundle, Sequence: p.Sequence, BundleUpdatedAt: ts(p.BundleUpdatedAt),
		LastAttempt: ts(p.Status.LastAttempt), LastSuccess: ts(p.Status.LastSuccess), LastError: p.Status.LastError,
		NextAttempt: ts(p.Status.NextAttempt),
	}
}

// FederationPeerFromProto converts a federation peer message.
func FederationPeerFromProto(m *meshrootv1.FederationPeer) store.FederationPeer {
	return store.FederationPeer{
		TrustDomain: m.GetTrustDomain(), URL: m.GetUrl(), Profile: store.FederationProfile(m.GetProfile()),
		EndpointSPIFFEID: m.GetEndpointSpiffeId(), CreatedAt: fromTS(m.GetCreatedAt()), Bundle: m.GetBundle(),
		Sequence: m.GetSequence(), BundleUpdatedAt: fromTS(m.GetBundleUpdatedAt()),
		Status: store.FederationStatus{
			LastAttempt: fromTS(m.GetLastAttempt()), LastSuccess: fromTS(m.GetLastSuccess()),
			LastError: m.GetLastError(), NextAttempt: fromTS(m.GetNextAttempt()),
		},
	}
}

// AddFederation registers a foreign trust domain.
func (s *AdminServer) AddFederation(ctx context.Context, req *meshrootv1.AddFederationRequest) (*meshrootv1.FederationPeer, error) {
	p, err := s.svc.AddFederation(ca.WithActor(ctx, s.actor(ctx)), ca.AddFederationRequest{
		TrustDomain: req.GetTrustDomain(), URL: req.GetUrl(), Profile: store.FederationProfile(req.GetProfile()),
		EndpointSPIFFEID: req.GetEndpointSpiffeId(), BootstrapBundle: req.GetBootstrapBundle(),
	})

	if err != nil {
		return nil, s.err(ctx, err)
	}
	s.hub.Poke()
	if s.federation != nil {
		s.federation.Refresh(p.TrustDomain)
	}
	return FederationPeerToProto(p), nil
}

// RemoveFederation stops federating with a trust domain.
func (s *AdminServer) RemoveFederation(ctx context.Context, req *meshrootv1.RemoveFederationRequest) (*meshrootv1.RemoveFederationResponse, error) {
	if err := s.svc.RemoveFederation(ca.WithActor(ctx, s.actor(ctx)), req.GetTrustDomain()); err != nil {
		return nil, s.err(ctx, err)
	}
	s.hub.Poke()
	return &meshrootv1.RemoveFederationResponse{}, nil
}

// ListFederation lists federation peers with their status.
func (s *AdminServer) ListFederation(ctx context.Context, _ *meshrootv1.ListFederationRequest) (*meshrootv1.ListFederationResponse, error) {
	peers, err := s.svc.ListFederation(ctx)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	out := &meshrootv1.ListFederationResponse{}
	for _, p := range peers {
		out.Peers = append(out.Peers, FederationPeerToProto(p))
	}
	return out, nil
}

// RefreshFederation asks the watcher of one peer to fetch now.
func (s *AdminServer) RefreshFederation(ctx context.Context, req *meshrootv1.RefreshFederationRequest) (*meshrootv1.FederationPeer, error) {
	p, err := s.svc.Store().GetFederationPeer(ctx, req.GetTrustDomain())
	if err != nil {
		return nil, s.err(ctx, err)
	}
	if s.federation == nil {
		return nil, status.Error(codes.FailedPrecondition, "federation watchers are not running on this server")
	}
	s.federation.Refresh(p.TrustDomain)
	return FederationPeerToProto(p), nil
}
