package server

import (
	"context"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/api/wire"
)

// QuarantineCluster quarantines a cluster; agents get the new CRLs at once.
func (s *AdminServer) QuarantineCluster(ctx context.Context, req *meshrootv1.QuarantineClusterRequest) (*meshrootv1.QuarantineClusterResponse, error) {
	res, err := s.svc.QuarantineCluster(s.as(ctx), wire.QuarantineRequestFromProto(req))
	if !req.GetDryRun() {
		err = s.poked(err)
	}
	return reply(ctx, s, res, err, ok(wire.QuarantineResultToProto))
}

// ReleaseCluster lifts a cluster's quarantine.
func (s *AdminServer) ReleaseCluster(ctx context.Context, req *meshrootv1.ReleaseClusterRequest) (*meshrootv1.Quarantine, error) {
	q, err := s.svc.ReleaseCluster(s.as(ctx), req.GetCluster())
	return reply(ctx, s, q, err, ok(wire.QuarantineToProto))
}

// ListQuarantines lists the quarantined clusters.
func (s *AdminServer) ListQuarantines(ctx context.Context, _ *meshrootv1.ListQuarantinesRequest) (*meshrootv1.ListQuarantinesResponse, error) {
	qs, err := s.svc.ListQuarantines(s.as(ctx))
	return reply(ctx, s, qs, err, ok(wire.QuarantinesToProto))
}
