package server

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/api/wire"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/server/authn"
)

// IssuerServer implements the Issuer service that cluster agents call.
type IssuerServer struct {
	meshrootv1.UnimplementedIssuerServer
	svc         *ca.Service
	auth        *authn.Authenticator
	hub         *BundleHub
	log         *slog.Logger
	refreshHint time.Duration
	// stopping is closed when the server shuts down, so that watch streams
	// end and a graceful stop does not wait for them.
	stopping chan struct{}
	stopOnce sync.Once
	// refusals, when set, records refusals bounded and summarised per
	// peer (NewServer sets it).
	refusals *refusals
	// msgs are the watch streams' shared encodings of the current bundles.
	msgs watchMessages
}

// NewIssuerServer returns the Issuer service over svc, authenticating
// requesters with auth and serving bundles from hub.
func NewIssuerServer(svc *ca.Service, auth *authn.Authenticator, hub *BundleHub, log *slog.Logger, refreshHint time.Duration) *IssuerServer {
	s := &IssuerServer{svc: svc, auth: auth, hub: hub, log: log, refreshHint: refreshHint, stopping: make(chan struct{})}
	s.msgs.current = func() uint64 { b, _, _ := hub.Current(); return b.Gen }
	return s
}

// Stop ends every WatchTrustBundle stream; agents reconnect to another
// replica or when the server is back.
func (s *IssuerServer) Stop() { s.stopOnce.Do(func() { close(s.stopping) }) }

// SignIntermediate authenticates the requester for the named cluster and
// signs its intermediate. Refusals are audited with their reason.
func (s *IssuerServer) SignIntermediate(ctx context.Context, req *meshrootv1.SignIntermediateRequest) (*meshrootv1.SignIntermediateResponse, error) {
	if err := ca.ValidateClusterName(req.GetCluster()); err != nil {
		return nil, s.refuse(ctx, req.GetCluster(), status.Error(codes.InvalidArgument, err.Error()))
	}
	cred := credentialFrom(ctx)
	if cred.JoinToken != "" {
		// The key a join token is spent with, and recognised by on a retry.
		cred.CSRKeyHash = ca.CSRKeyHash(req.GetCsr())
	}
	id, err := s.auth.Authenticate(ctx, req.GetCluster(), cred)
	if err != nil {
		return nil, s.refuse(ctx, req.GetCluster(), toStatus(ctx, s.log, err), err)
	}
	if req.GetTtlSeconds() < 0 {
		return nil, s.refuse(ctx, id.Cluster, status.Error(codes.InvalidArgument, "ttl_seconds is negative"))
	}
	actor := ca.Actor(fmt.Sprintf("cluster:%s/%s:%s", id.Cluster, id.Method, id.Subject))
	ireq := ca.IssueRequest{Cluster: id.Cluster, CSRData: req.GetCsr(), TTL: time.Duration(req.GetTtlSeconds()) * time.Second,
		Registered: id.Record}
	if id.Method == authn.MethodJoinToken {
		ireq.JoinToken = id.Subject
	}
	out, err := s.svc.IssueIntermediate(ca.WithActor(ctx, actor), ireq)

	if err != nil {
		st := toStatus(ctx, s.log, err)
		refused.WithLabelValues(status.Code(st).String()).Inc()
		return nil, st // the service audited the refusal itself
	}
	issued.WithLabelValues(id.Cluster, string(id.Method)).Inc()
	// The fleet's CRL set names every current intermediate as needing a
	// CRL: tell the agents now, so that none writes a first ca-crl.pem
	// that lacks this one (Envoy would refuse its chains).
	s.hub.Poke()
	s.log.InfoContext(ctx, "intermediate issued", "cluster", id.Cluster, "method", id.Method, "serial", ca.SerialHex(out.Cert.SerialNumber), "not_after", out.Cert.NotAfter)
	return &meshrootv1.SignIntermediateResponse{
		CertChain:      derList(out.Chain),
		TrustedRoots:   derList(out.Bundle.Roots),
		BundleSequence: out.Bundle.Sequence,
		RootId:         out.RootID,
		Serial:         ca.SerialHex(out.Cert.SerialNumber),
		NotAfter:       timestamppb.New(out.Cert.NotAfter),
	}, nil
}

// refuse audits a request refused before it reached the authority and
// returns st. Failures on meshroot's side (an unreachable OIDC issuer, say)
// are audited as "error" with the underlying reason; authn's errors never
// carry a credential.
func (s *IssuerServer) refuse(ctx context.Context, cluster string, st error, cause ...error) error {
	refused.WithLabelValues(status.Code(st).String()).Inc()
	reason := status.Convert(st).Message()
	result := "denied"
	switch status.Code(st) {
	case codes.Internal, codes.Unavailable, codes.Unknown, codes.DeadlineExceeded:
		result = "error"
		if len(cause) > 0 && cause[0] != nil {
			reason = cause[0].Error()
		}
	}
	if s.refusals != nil {
		s.refusals.record(ctx, peerKey(ctx), "intermediate.issue", cluster, result, status.Code(st), reason)
		return st
	}
	if err := s.svc.AuditResult(ctx, unauthenticatedActor, "intermediate.issue", cluster, result, reason); err != nil {
		s.log.ErrorContext(ctx, "audit refusal", "error", err)
	}
	s.log.WarnContext(ctx, "issuance refused", "cluster", cluster, "code", status.Code(st).String(), "reason", reason)
	return st
}

// GetTrustBundle returns the current trust bundle. Roots are public; no
// credential is needed.
func (s *IssuerServer) GetTrustBundle(ctx context.Context, _ *meshrootv1.GetTrustBundleRequest) (*meshrootv1.TrustBundle, error) {
	b, ok, _ := s.hub.Current()
	if !ok {
		return nil, status.Error(codes.Unavailable, "no trust bundle yet: the server has no root (run `meshroot root init`)")
	}
	return s.bundleMessage(ctx, b, nil), nil
}

// WatchTrustBundle sends the current bundle and then every change, until
// the client goes away or the server stops. Each message is the whole
// state, so a watch resumed on any replica misses nothing; an agent that
// already holds a newer sequence than this replica's hub (it heard it from
// another replica) first waits for the hub to catch up from the store, so
// that it is never sent an older bundle.
func (s *IssuerServer) WatchTrustBundle(req *meshrootv1.WatchTrustBundleRequest, stream meshrootv1.Issuer_WatchTrustBundleServer) error {
	ctx := stream.Context()
	watchers.Inc()
	defer watchers.Dec()
	if have := req.GetHaveSequence(); have > 0 && !s.hub.CatchUp(ctx, have, catchUpWait) && ctx.Err() == nil {
		// The store itself is older (restored from a backup): it is the
		// truth, send it.
		b, _, _ := s.hub.Current()
		s.log.WarnContext(ctx, "an agent holds a newer trust bundle than the store", "agent_sequence", have, "store_sequence", b.Local.Sequence)
	}
	var sent [32]byte
	var crls *crlStream
	if req.GetCrlDeltas() {
		crls = &crlStream{}
	}
	first := true
	for {
		b, ok, changed := s.hub.Current()
		if ok && (first || b.Version != sent) {
			if err := s.sendBundle(stream, b, crls); err != nil {
				return err
			}
			sent, first = b.Version, false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return status.Error(codes.Unavailable, "server shutting down")
		case <-changed:
		}
	}
}

// sendBundle sends b on a watch stream, as the encoding that every stream
// in the same place shares (watchMessages).
func (s *IssuerServer) sendBundle(stream grpc.ServerStream, b Bundles, crls *crlStream) error {
	if b.CRLSnap == nil { // bundles not from the hub: nothing to share
		return stream.SendMsg(s.bundleMessage(stream.Context(), b, crls))
	}
	had := crls.copy()
	pm, err := s.msgs.get(b.Gen, crls.key(), func() (*grpc.PreparedMsg, error) {
		pm := &grpc.PreparedMsg{}
		return pm, pm.Encode(stream, s.bundleMessage(stream.Context(), b, had))
	})
	if err != nil {
		return err
	}
	if crls != nil {
		crls.last = b.CRLSnap
	}
	return stream.SendMsg(pm)
}

// bundleMessage is b as a message; with crls (a watch stream of an agent
// taking deltas) the CRL set is what changed since that stream's previous
// message.
func (s *IssuerServer) bundleMessage(ctx context.Context, b Bundles, crls *crlStream) *meshrootv1.TrustBundle {
	tb := b.Local
	msg := &meshrootv1.TrustBundle{
		TrustDomain:        tb.TrustDomain,
		Roots:              derList(tb.Roots),
		Sequence:           tb.Sequence,
		RefreshHintSeconds: int64(s.refreshHint / time.Second),
	}
	msg.ActiveRootId = b.ActiveRootID
	if crls != nil {
		snap := b.CRLSnap
		if snap == nil {
			snap = newCRLSnapshot(b.CRLs, nil) // bundles not from the hub
		}
		msg.Crls = crls.message(snap)
	} else {
		msg.Crls = wire.CRLSetToProto(b.CRLs)
	}
	for _, f := range b.Federated {
		msg.Federated = append(msg.Federated, &meshrootv1.FederatedBundle{TrustDomain: f.TrustDomain, Roots: derList(f.Roots), Sequence: f.Sequence})
	}
	return msg
}

func derList(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}

// ReportStatus records what the cluster says it applied. The requester is
// authenticated like SignIntermediate (usually with its intermediate); a
// join token is not spent on it.
func (s *IssuerServer) ReportStatus(ctx context.Context, req *meshrootv1.ReportStatusRequest) (*meshrootv1.ReportStatusResponse, error) {
	cred := credentialFrom(ctx)
	cred.JoinToken = "" // single-use tokens are for issuance only
	id, err := s.auth.AuthenticateReport(ctx, req.GetCluster(), cred)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	if err := s.svc.Report(ctx, ca.StatusReport{
		Cluster: id.Cluster, Registered: id.Registration,
		BundleSequence: req.GetBundleSequence(), IntermediateSerial: req.GetIntermediateSerial(),
		Istiod: wire.IstiodFromReport(req), AppliedCRLs: wire.AppliedCRLsFromReport(req),
		Intermediate: id.Intermediate,
	}); err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	if err := s.submitCRL(ctx, id.Cluster, string(id.Method), req.GetCrl()); err != nil {
		return nil, err
	}
	return &meshrootv1.ReportStatusResponse{}, nil
}
