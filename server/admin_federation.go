package server

import (
	"context"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/api/wire"
	"github.com/meshroot/meshroot/store"
)

// Refresher fetches a federation peer's bundle now.
type Refresher interface {
	Refresh(trustDomain string)
}

// AddFederation registers a foreign trust domain and has its watcher fetch
// the peer's bundle at once.
func (s *AdminServer) AddFederation(ctx context.Context, req *meshrootv1.AddFederationRequest) (*meshrootv1.FederationPeer, error) {
	p, err := s.svc.AddFederation(s.as(ctx), wire.AddFederationRequestFromProto(req))
	if s.poked(err) == nil && s.federation != nil {
		s.federation.Refresh(p.TrustDomain)
	}
	return reply(ctx, s, p, err, ok(wire.FederationPeerToProto))
}

// RemoveFederation stops federating with a trust domain.
func (s *AdminServer) RemoveFederation(ctx context.Context, req *meshrootv1.RemoveFederationRequest) (*meshrootv1.RemoveFederationResponse, error) {
	err := s.poked(s.svc.RemoveFederation(s.as(ctx), req.GetTrustDomain()))
	return reply(ctx, s, struct{}{}, err, ok(func(struct{}) *meshrootv1.RemoveFederationResponse { return &meshrootv1.RemoveFederationResponse{} }))
}

// ListFederation lists federation peers with their status.
func (s *AdminServer) ListFederation(ctx context.Context, _ *meshrootv1.ListFederationRequest) (*meshrootv1.ListFederationResponse, error) {
	peers, err := s.svc.ListFederation(ctx)
	return reply(ctx, s, peers, err, ok(func(peers []store.FederationPeer) *meshrootv1.ListFederationResponse {
		return &meshrootv1.ListFederationResponse{Peers: wire.List(peers, wire.FederationPeerToProto)}
	}))
}

// RefreshFederation asks the watcher of one peer to fetch now.
func (s *AdminServer) RefreshFederation(ctx context.Context, req *meshrootv1.RefreshFederationRequest) (*meshrootv1.FederationPeer, error) {
	p, err := s.svc.RefreshFederation(ctx, req.GetTrustDomain())
	return reply(ctx, s, p, err, ok(wire.FederationPeerToProto))
}
