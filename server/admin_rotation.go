package server

import (
	"context"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/api/wire"
	"github.com/meshroot/meshroot/ca"
)

// ActivateRoot runs rotation phase 2.
func (s *AdminServer) ActivateRoot(ctx context.Context, req *meshrootv1.PhaseRequest) (*meshrootv1.PhaseResult, error) {
	r, err := s.svc.ActivateRoot(s.as(ctx), wire.PhaseRequestFromProto(req))
	return s.phaseDone(ctx, r, err)
}

// RetireRoot runs rotation phase 3.
func (s *AdminServer) RetireRoot(ctx context.Context, req *meshrootv1.PhaseRequest) (*meshrootv1.PhaseResult, error) {
	r, err := s.svc.RetireRoot(s.as(ctx), wire.PhaseRequestFromProto(req))
	return s.phaseDone(ctx, r, err)
}

// RollbackRoot undoes a prepare.
func (s *AdminServer) RollbackRoot(ctx context.Context, req *meshrootv1.PhaseRequest) (*meshrootv1.PhaseResult, error) {
	r, err := s.svc.RollbackPrepared(s.as(ctx), wire.PhaseRequestFromProto(req))
	return s.phaseDone(ctx, r, err)
}

// RevokeRoot is the emergency path.
func (s *AdminServer) RevokeRoot(ctx context.Context, req *meshrootv1.RevokeRootRequest) (*meshrootv1.PhaseResult, error) {
	r, err := s.svc.RevokeRoot(s.as(ctx), wire.RevokeRequestFromProto(req))
	return s.phaseDone(ctx, r, err)
}

func (s *AdminServer) phaseDone(ctx context.Context, r ca.PhaseResult, err error) (*meshrootv1.PhaseResult, error) {
	if err == nil && r.Done {
		s.hub.Poke() // agents hear of the new active root or bundle at once
	}
	return reply(ctx, s, r, err, ok(wire.PhaseResultToProto))
}

// RotationStatus reports every cluster's part in the rotation.
func (s *AdminServer) RotationStatus(ctx context.Context, req *meshrootv1.RotationStatusRequest) (*meshrootv1.RotationStatusResponse, error) {
	st, err := s.svc.RotationStatus(ctx, wire.FromSeconds(req.GetWorkloadCertTtlSeconds()))
	return reply(ctx, s, st, err, wire.RotationStatusToProto)
}
