package server

import (
	"context"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/api/wire"
)

// IssueAdminCert issues an admin client certificate of the admin CA.
func (s *AdminServer) IssueAdminCert(ctx context.Context, m *meshrootv1.IssueAdminCertRequest) (*meshrootv1.IssueAdminCertResponse, error) {
	v, err := s.svc.IssueAdminCert(s.as(ctx), wire.IssueAdminCertRequestFromProto(m))
	return reply(ctx, s, v, err, ok(wire.AdminCertIssuedToProto))
}

// ListAdminCerts lists the admin client certificates issued.
func (s *AdminServer) ListAdminCerts(ctx context.Context, _ *meshrootv1.ListAdminCertsRequest) (*meshrootv1.ListAdminCertsResponse, error) {
	cs, err := s.svc.ListAdminCerts(ctx)
	return reply(ctx, s, cs, err, ok(wire.AdminCertsToProto))
}

// RevokeAdminCert revokes an admin client certificate.
func (s *AdminServer) RevokeAdminCert(ctx context.Context, m *meshrootv1.RevokeAdminCertRequest) (*meshrootv1.AdminCert, error) {
	c, err := s.svc.RevokeAdminCert(s.as(ctx), m.GetSerial())
	return reply(ctx, s, c, err, ok(wire.AdminCertToProto))
}
