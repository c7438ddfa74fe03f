package server

import (
	"context"
	"time"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/api/wire"
	"github.com/meshroot/meshroot/store"
)

// AddCluster registers a cluster.
func (s *AdminServer) AddCluster(ctx context.Context, req *meshrootv1.AddClusterRequest) (*meshrootv1.Cluster, error) {
	c, err := s.svc.AddCluster(s.as(ctx), wire.AddClusterRequestFromProto(req))
	return reply(ctx, s, c, err, ok(wire.ClusterToProto))
}

// RemoveCluster unregisters a cluster.
func (s *AdminServer) RemoveCluster(ctx context.Context, req *meshrootv1.RemoveClusterRequest) (*meshrootv1.RemoveClusterResponse, error) {
	err := s.svc.RemoveCluster(s.as(ctx), req.GetName())
	return reply(ctx, s, struct{}{}, err, ok(func(struct{}) *meshrootv1.RemoveClusterResponse { return &meshrootv1.RemoveClusterResponse{} }))
}

// ListClusters lists registered clusters.
func (s *AdminServer) ListClusters(ctx context.Context, _ *meshrootv1.ListClustersRequest) (*meshrootv1.ListClustersResponse, error) {
	cs, err := s.svc.ListClusters(ctx)
	return reply(ctx, s, cs, err, ok(func(cs []store.Cluster) *meshrootv1.ListClustersResponse {
		return &meshrootv1.ListClustersResponse{Clusters: wire.List(cs, wire.ClusterToProto)}
	}))
}

// ShowCluster returns one cluster with its current intermediate.
func (s *AdminServer) ShowCluster(ctx context.Context, req *meshrootv1.ShowClusterRequest) (*meshrootv1.ClusterDetail, error) {
	d, err := s.svc.ShowCluster(ctx, req.GetName())
	return reply(ctx, s, d, err, ok(wire.ClusterDetailToProto))
}

// CreateToken makes a single-use join token for a cluster (one hour when
// no TTL is asked for). The secret is returned once and stored only as a
// hash.
func (s *AdminServer) CreateToken(ctx context.Context, m *meshrootv1.CreateTokenRequest) (*meshrootv1.CreateTokenResponse, error) {
	req := wire.JoinTokenRequestFromProto(m)
	if req.TTL == 0 {
		req.TTL = time.Hour
	}
	t, err := s.svc.CreateJoinToken(s.as(ctx), req)
	return reply(ctx, s, t, err, ok(wire.JoinTokenToProto))
}

// IssueIntermediate signs an intermediate from a CSR the CLI made.
func (s *AdminServer) IssueIntermediate(ctx context.Context, req *meshrootv1.IssueIntermediateRequest) (*meshrootv1.SignIntermediateResponse, error) {
	out, err := s.svc.IssueIntermediate(s.as(ctx), wire.IssueRequestFromProto(req))
	return reply(ctx, s, out, s.poked(err), ok(wire.IssuedToProto)) // the CRL set's intermediates changed
}

// ListIntermediates lists issued intermediates.
func (s *AdminServer) ListIntermediates(ctx context.Context, req *meshrootv1.ListIntermediatesRequest) (*meshrootv1.ListIntermediatesResponse, error) {
	list, err := s.svc.ListIntermediates(ctx, req.GetCluster())
	return reply(ctx, s, list, err, ok(func(list []store.Intermediate) *meshrootv1.ListIntermediatesResponse {
		return &meshrootv1.ListIntermediatesResponse{Intermediates: wire.List(list, wire.IntermediateToProto)}
	}))
}

// RevokeIntermediate revokes an intermediate.
func (s *AdminServer) RevokeIntermediate(ctx context.Context, req *meshrootv1.RevokeIntermediateRequest) (*meshrootv1.Intermediate, error) {
	in, err := s.svc.RevokeIntermediate(s.as(ctx), req.GetSerial(), req.GetReason())
	return reply(ctx, s, in, err, ok(wire.IntermediateToProto))
}

// SetClusterGate marks what makes a cluster ready for a rotation phase.
func (s *AdminServer) SetClusterGate(ctx context.Context, req *meshrootv1.SetClusterGateRequest) (*meshrootv1.SetClusterGateResponse, error) {
	err := s.svc.SetClusterGate(s.as(ctx), req.GetName(), req.GetGate())
	return reply(ctx, s, struct{}{}, err, ok(func(struct{}) *meshrootv1.SetClusterGateResponse { return &meshrootv1.SetClusterGateResponse{} }))
}
