package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/server/authn"
	"github.com/meshroot/meshroot/store"
)

// AdminServer implements the Admin service behind the CLI. Who may call it
// is decided by the transport (the unix socket's file mode, or mTLS); every
// call that changes state is audited by the authority with the caller's
// identity.
type AdminServer struct {
	meshrootv1.UnimplementedAdminServer
	svc        *ca.Service
	hub        *BundleHub
	log        *slog.Logger
	federation Refresher // nil when no federation watchers run here
	// refreshHint is the bundle refresh hint the server advertises.
	refreshHint time.Duration
}

// NewAdminServer returns the Admin service over svc. Changes to roots are
// pushed to hub so that agents hear of them at once.
func NewAdminServer(svc *ca.Service, hub *BundleHub, log *slog.Logger, federation Refresher, refreshHint time.Duration) *AdminServer {
	return &AdminServer{svc: svc, hub: hub, log: log, federation: federation, refreshHint: refreshHint}
}

func (s *AdminServer) actor(ctx context.Context) ca.Actor { return ca.Actor(adminActor(ctx)) }

func (s *AdminServer) err(ctx context.Context, err error) error {
	st := toStatus(ctx, s.log, err)
	// The admin caller owns the server: tell it why, not "internal error".
	if status.Code(st) == codes.Internal {
		return status.Error(codes.Internal, err.Error())
	}
	return st
}

// InitRoot creates the trust domain's first root in the server's key manager.
func (s *AdminServer) InitRoot(ctx context.Context, req *meshrootv1.InitRootRequest) (*meshrootv1.Root, error) {
	kt, err := keys.ParseKeyType(req.GetKeyType())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	r, err := s.svc.InitRoot(ctx, s.actor(ctx), ca.InitRootRequest{
		TrustDomain: req.GetTrustDomain(), KeyType: kt, TTL: time.Duration(req.GetTtlSeconds()) * time.Second,
	})
	if err != nil {
		return nil, s.err(ctx, err)
	}
	s.hub.Poke()
	m, err := RootToProto(r)
	return m, s.err(ctx, err)
}

// PrepareRoot creates the next root and adds it to the trust bundle.
func (s *AdminServer) PrepareRoot(ctx context.Context, req *meshrootv1.PrepareRootRequest) (*meshrootv1.Root, error) {
	kt, err := keys.ParseKeyType(req.GetKeyType())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	r, err := s.svc.PrepareRoot(ctx, s.actor(ctx), ca.PrepareRootRequest{
		KeyType: kt, TTL: time.Duration(req.GetTtlSeconds()) * time.Second, CrossSign: req.GetCrossSign(), DryRun: req.GetDryRun(),
	})
	if err != nil {
		return nil, s.err(ctx, err)
	}
	if req.GetDryRun() {
		return &meshrootv1.Root{TrustDomain: r.TrustDomain, State: string(r.State)}, nil
	}
	s.hub.Poke()
	m, err := RootToProto(r)
	return m, s.err(ctx, err)
}

// ListRoots lists every root.
func (s *AdminServer) ListRoots(ctx context.Context, _ *meshrootv1.ListRootsRequest) (*meshrootv1.ListRootsResponse, error) {
	roots, err := s.svc.ListRoots(ctx)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	out := &meshrootv1.ListRootsResponse{}
	for _, r := range roots {
		m, err := RootToProto(r)
		if err != nil {
			return nil, s.err(ctx, err)
		}
		out.Roots = append(out.Roots, m)
	}
	return out, nil
}

// AddCluster registers a cluster.
func (s *AdminServer) AddCluster(ctx context.Context, req *meshrootv1.AddClusterRequest) (*meshrootv1.Cluster, error) {
	c, err := s.svc.AddCluster(ctx, s.actor(ctx), ca.AddClusterRequest{
		Name: req.GetName(), TrustDomain: req.GetTrustDomain(), Auth: AuthFromProto(req.GetAuth()),
		PermitDNS: req.GetPermitDns(), PermitIPs: req.GetPermitIps(),
	})
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return ClusterToProto(c), nil
}

// RemoveCluster unregisters a cluster.
func (s *AdminServer) RemoveCluster(ctx context.Context, req *meshrootv1.RemoveClusterRequest) (*meshrootv1.RemoveClusterResponse, error) {
	if err := s.svc.RemoveCluster(ctx, s.actor(ctx), req.GetName()); err != nil {
		return nil, s.err(ctx, err)
	}
	return &meshrootv1.RemoveClusterResponse{}, nil
}

// ListClusters lists registered clusters.
func (s *AdminServer) ListClusters(ctx context.Context, _ *meshrootv1.ListClustersRequest) (*meshrootv1.ListClustersResponse, error) {
	cs, err := s.svc.ListClusters(ctx)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	out := &meshrootv1.ListClustersResponse{}
	for _, c := range cs {
		out.Clusters = append(out.Clusters, ClusterToProto(c))
	}
	return out, nil
}

// IssueIntermediate signs an intermediate from a CSR the CLI made.
func (s *AdminServer) IssueIntermediate(ctx context.Context, req *meshrootv1.IssueIntermediateRequest) (*meshrootv1.SignIntermediateResponse, error) {
	out, err := s.svc.IssueIntermediate(ctx, s.actor(ctx), ca.IssueRequest{
		Cluster: req.GetCluster(), CSRData: req.GetCsr(), TTL: time.Duration(req.GetTtlSeconds()) * time.Second,
		TrustDomainConstraint: req.GetTrustDomainConstraint(),
	})
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return &meshrootv1.SignIntermediateResponse{
		CertChain: derList(out.Chain), TrustedRoots: derList(out.Bundle.Roots), BundleSequence: out.Bundle.Sequence,
		RootId: out.RootID, Serial: ca.SerialHex(out.Cert.SerialNumber), NotAfter: timestamppb.New(out.Cert.NotAfter),
	}, nil
}

// ListIntermediates lists issued intermediates.
func (s *AdminServer) ListIntermediates(ctx context.Context, req *meshrootv1.ListIntermediatesRequest) (*meshrootv1.ListIntermediatesResponse, error) {
	list, err := s.svc.ListIntermediates(ctx, req.GetCluster())
	if err != nil {
		return nil, s.err(ctx, err)
	}
	out := &meshrootv1.ListIntermediatesResponse{}
	for _, in := range list {
		out.Intermediates = append(out.Intermediates, IntermediateToProto(in))
	}
	return out, nil
}

// RevokeIntermediate revokes an intermediate.
func (s *AdminServer) RevokeIntermediate(ctx context.Context, req *meshrootv1.RevokeIntermediateRequest) (*meshrootv1.Intermediate, error) {
	in, err := s.svc.RevokeIntermediate(ctx, s.actor(ctx), req.GetSerial(), req.GetReason())
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return IntermediateToProto(in), nil
}

// GetTrustBundle returns the trust bundle.
func (s *AdminServer) GetTrustBundle(ctx context.Context, _ *meshrootv1.GetTrustBundleRequest) (*meshrootv1.TrustBundle, error) {
	tb, err := s.svc.TrustBundle(ctx)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	// The refresh hint goes with it: a peer bootstrapped from this document
	// without one would derive its own from the root's lifetime (months).
	return &meshrootv1.TrustBundle{
		TrustDomain: tb.TrustDomain, Roots: derList(tb.Roots), Sequence: tb.Sequence,
		RefreshHintSeconds: int64(s.refreshHint / time.Second),
	}, nil
}

// maxAuditPage bounds one ListAudit answer.
const maxAuditPage = 10000

// ListAudit returns audit entries after a sequence number.
func (s *AdminServer) ListAudit(ctx context.Context, req *meshrootv1.ListAuditRequest) (*meshrootv1.ListAuditResponse, error) {
	limit := int(req.GetLimit())
	if limit <= 0 || limit > maxAuditPage {
		limit = maxAuditPage
	}
	entries, err := s.svc.Store().ListAudit(ctx, req.GetAfterSeq(), limit)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	out := &meshrootv1.ListAuditResponse{}
	for _, e := range entries {
		out.Entries = append(out.Entries, AuditToProto(e))
	}
	return out, nil
}

// VerifyAudit checks the audit hash chain.
func (s *AdminServer) VerifyAudit(ctx context.Context, _ *meshrootv1.VerifyAuditRequest) (*meshrootv1.VerifyAuditResponse, error) {
	v, ok := s.svc.Store().(store.AuditVerifier)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this store cannot verify its audit log")
	}
	if err := v.VerifyAudit(ctx); err != nil {
		var ce *store.ChainError
		if errors.As(err, &ce) {
			return nil, status.Error(codes.DataLoss, err.Error())
		}
		return nil, s.err(ctx, err)
	}
	head, err := s.svc.Store().ListAudit(ctx, 0, 0)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return &meshrootv1.VerifyAuditResponse{Entries: int64(len(head))}, nil
}

// CreateToken makes a single-use join token for a cluster. The secret is
// returned once and stored only as a hash.
func (s *AdminServer) CreateToken(ctx context.Context, req *meshrootv1.CreateTokenRequest) (*meshrootv1.CreateTokenResponse, error) {
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	if ttl == 0 {
		ttl = time.Hour
	}
	token, rec, err := authn.NewJoinToken(req.GetCluster(), ttl, time.Now())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.svc.CreateJoinToken(ctx, s.actor(ctx), rec); err != nil {
		return nil, s.err(ctx, err)
	}
	return &meshrootv1.CreateTokenResponse{Token: token, ExpiresAt: timestamppb.New(rec.ExpiresAt)}, nil
}
