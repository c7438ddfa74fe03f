package server

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
)

// AnchorAudit returns a signed statement of the audit log's head.
func (s *AdminServer) AnchorAudit(ctx context.Context, _ *meshrootv1.AnchorAuditRequest) (*meshrootv1.AnchorAuditResponse, error) {
	anchor, err := s.svc.AnchorAudit(s.as(ctx))
	return reply(ctx, s, anchor, err, ok(func(b []byte) *meshrootv1.AnchorAuditResponse {
		return &meshrootv1.AnchorAuditResponse{AnchorPem: b}
	}))
}

// GetPolicy returns the intermediate policy the server issues under.
func (s *AdminServer) GetPolicy(ctx context.Context, _ *meshrootv1.GetPolicyRequest) (*meshrootv1.PolicyResponse, error) {
	p, stored, err := s.svc.Policy(ctx)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return policyResponse(ctx, s, p, stored, false)
}

// SetPolicy replaces the stored intermediate policy. A policy that does not
// parse is audited as a refusal.
func (s *AdminServer) SetPolicy(ctx context.Context, req *meshrootv1.SetPolicyRequest) (*meshrootv1.PolicyResponse, error) {
	ctx = s.as(ctx)
	p, err := ca.ParsePolicyJSON(req.GetPolicyJson())
	if err != nil {
		if aerr := s.svc.AuditRefusal(ctx, ca.ActorFrom(ctx), "policy.set", ca.MetaPolicy, err.Error()); aerr != nil {
			s.log.Error("audit log", "error", aerr)
		}
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	p, changed, err := s.svc.SetPolicy(ctx, p)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return policyResponse(ctx, s, p, true, changed)
}

func policyResponse(ctx context.Context, s *AdminServer, p ca.Policy, stored, changed bool) (*meshrootv1.PolicyResponse, error) {
	b, err := ca.PolicyJSON(p)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return &meshrootv1.PolicyResponse{PolicyJson: b, Stored: stored, Changed: changed}, nil
}
