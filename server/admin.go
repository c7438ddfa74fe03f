package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/api/wire"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/server/authn"
	"github.com/meshroot/meshroot/store"
)

// AdminServer implements the Admin service behind the CLI over ca.Admin:
// each method converts the request (api/wire), calls the authority with
// the caller as actor, and converts the answer. Who may call it is decided
// by the transport (the unix socket's file mode, or mTLS); every call that
// changes state is audited by the authority with the caller's identity.
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
// pushed to hub so that agents hear of them at once. svc makes join tokens
// in the format this server's authentication verifies (authn), and
// federation, when set, becomes its federation refresher, so that
// `federation refresh` reaches the watchers.
func NewAdminServer(svc *ca.Service, hub *BundleHub, log *slog.Logger, federation Refresher, refreshHint time.Duration) *AdminServer {
	svc.SetJoinTokenMinter(authn.NewJoinToken)
	if federation != nil {
		svc.SetFederationRefresher(federation)
	}
	return &AdminServer{svc: svc, hub: hub, log: log, federation: federation, refreshHint: refreshHint}
}

// as returns ctx carrying the caller, identified by the transport, as the
// actor for the audit log.
func (s *AdminServer) as(ctx context.Context) context.Context {
	return ca.WithActor(ctx, ca.Actor(adminActor(ctx)))
}

func (s *AdminServer) err(ctx context.Context, err error) error {
	var ce *store.ChainError
	switch {
	case errors.As(err, &ce):
		return status.Error(codes.DataLoss, err.Error())
	case errors.Is(err, ca.ErrNoFederationWatchers):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	st := toStatus(ctx, s.log, err)
	// The admin caller owns the server: tell it why, not "internal error".
	if status.Code(st) == codes.Internal {
		return status.Error(codes.Internal, err.Error())
	}
	return st
}

// reply converts what the authority returned into the answer, or its error
// into a status.
func reply[T, M any](ctx context.Context, s *AdminServer, v T, err error, conv func(T) (M, error)) (M, error) {
	var m M
	if err == nil {
		m, err = conv(v)
	}
	if err != nil {
		var zero M
		return zero, s.err(ctx, err)
	}
	return m, nil
}

// ok adapts a conversion that cannot fail.
func ok[T, M any](f func(T) M) func(T) (M, error) {
	return func(v T) (M, error) { return f(v), nil }
}

// poked tells agents at once of a change that succeeded.
func (s *AdminServer) poked(err error) error {
	if err == nil {
		s.hub.Poke()
	}
	return err
}

func badRequest(err error) error { return status.Error(codes.InvalidArgument, err.Error()) }

// InitRoot creates the trust domain's first root in the server's key manager.
func (s *AdminServer) InitRoot(ctx context.Context, m *meshrootv1.InitRootRequest) (*meshrootv1.Root, error) {
	req, err := wire.InitRootRequestFromProto(m)
	if err != nil {
		return nil, badRequest(err)
	}
	r, err := s.svc.InitRoot(s.as(ctx), req)
	return reply(ctx, s, r, s.poked(err), wire.RootToProto)
}

// PrepareRoot creates the next root and adds it to the trust bundle.
func (s *AdminServer) PrepareRoot(ctx context.Context, m *meshrootv1.PrepareRootRequest) (*meshrootv1.Root, error) {
	req, err := wire.PrepareRootRequestFromProto(m)
	if err != nil {
		return nil, badRequest(err)
	}
	r, err := s.svc.PrepareRoot(s.as(ctx), req)
	if err == nil && req.DryRun {
		return &meshrootv1.Root{TrustDomain: r.TrustDomain, State: string(r.State)}, nil
	}
	return reply(ctx, s, r, s.poked(err), wire.RootToProto)
}

// ListRoots lists every root.
func (s *AdminServer) ListRoots(ctx context.Context, _ *meshrootv1.ListRootsRequest) (*meshrootv1.ListRootsResponse, error) {
	roots, err := s.svc.ListRoots(ctx)
	return reply(ctx, s, roots, err, func(roots []store.Root) (*meshrootv1.ListRootsResponse, error) {
		ms, err := wire.RootsToProto(roots)
		return &meshrootv1.ListRootsResponse{Roots: ms}, err
	})
}

// GetTrustBundle returns the trust bundle.
func (s *AdminServer) GetTrustBundle(ctx context.Context, _ *meshrootv1.GetTrustBundleRequest) (*meshrootv1.TrustBundle, error) {
	tb, err := s.svc.TrustBundle(ctx)
	// The refresh hint goes with it: a peer bootstrapped from this document
	// without one would derive its own from the root's lifetime (months).
	tb.RefreshHint = s.refreshHint
	return reply(ctx, s, tb, err, ok(wire.BundleToProto))
}

// maxAuditPage bounds the entries of one ListAudit answer, and
// maxAuditPageBytes its encoded size, well under the 4 MiB a gRPC client
// takes by default. A page holds at least one entry.
const (
	maxAuditPage      = 10000
	maxAuditPageBytes = 1 << 20
	auditReadChunk    = 256
)

// ListAudit returns audit entries after a sequence number: at most the
// limit asked for, and fewer when the page would exceed maxAuditPageBytes.
// A client reads on after the last entry it got until a page is empty.
func (s *AdminServer) ListAudit(ctx context.Context, req *meshrootv1.ListAuditRequest) (*meshrootv1.ListAuditResponse, error) {
	limit := int(req.GetLimit())
	if limit <= 0 || limit > maxAuditPage {
		limit = maxAuditPage
	}
	out := &meshrootv1.ListAuditResponse{}
	after, size := req.GetAfterSeq(), 0
	for len(out.Entries) < limit {
		entries, err := s.svc.ListAudit(ctx, after, min(auditReadChunk, limit-len(out.Entries)))
		if err != nil {
			return nil, s.err(ctx, err)
		}
		for _, e := range entries {
			m := wire.AuditToProto(e)
			n := proto.Size(m) + 8 // the entry's tag and length
			if size+n > maxAuditPageBytes && len(out.Entries) > 0 {
				return out, nil
			}
			out.Entries = append(out.Entries, m)
			size += n
			after = e.Seq
		}
		if len(entries) < auditReadChunk {
			break
		}
	}
	return out, nil
}

// VerifyAudit checks the audit hash chain, one row at a time; a broken
// chain is DATA_LOSS.
func (s *AdminServer) VerifyAudit(ctx context.Context, _ *meshrootv1.VerifyAuditRequest) (*meshrootv1.VerifyAuditResponse, error) {
	n, err := s.svc.VerifyAudit(ctx)
	return reply(ctx, s, n, err, ok(func(n int) *meshrootv1.VerifyAuditResponse {
		return &meshrootv1.VerifyAuditResponse{Entries: int64(n)}
	}))
}
