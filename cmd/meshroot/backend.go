package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/server"
	"github.com/meshroot/meshroot/server/authn"
	"github.com/meshroot/meshroot/store"
)

// backend is what the CLI's verbs act on: the running server through its
// admin socket (the default), or a data dir directly (--data-dir, for
// offline roots). Both audit every change.
type backend interface {
	InitRoot(ctx context.Context, req ca.InitRootRequest) (store.Root, error)
	ImportRoot(ctx context.Context, req ca.ImportRootRequest) (store.Root, error)
	PrepareRoot(ctx context.Context, req ca.PrepareRootRequest) (store.Root, error)
	ActivateRoot(ctx context.Context, req ca.PhaseRequest) (ca.PhaseResult, error)
	RetireRoot(ctx context.Context, req ca.PhaseRequest) (ca.PhaseResult, error)
	RollbackRoot(ctx context.Context, req ca.PhaseRequest) (ca.PhaseResult, error)
	RevokeRoot(ctx context.Context, req ca.RevokeRequest) (ca.PhaseResult, error)
	RotationStatus(ctx context.Context, workloadCertTTL time.Duration) (ca.RotationStatus, error)
	ListRoots(ctx context.Context) ([]store.Root, error)
	AddCluster(ctx context.Context, req ca.AddClusterRequest) (store.Cluster, error)
	RemoveCluster(ctx context.Context, name string) error
	ListClusters(ctx context.Context) ([]store.Cluster, error)
	IssueIntermediate(ctx context.Context, req ca.IssueRequest) (ca.Issued, error)
	ListIntermediates(ctx context.Context, cluster string) ([]store.Intermediate, error)
	RevokeIntermediate(ctx context.Context, serial, reason string) (store.Intermediate, error)
	TrustBundle(ctx context.Context) (ca.TrustBundle, error)
	ListAudit(ctx context.Context, after int64, limit int) ([]store.AuditEntry, error)
	VerifyAudit(ctx context.Context) (int, error)
	CreateToken(ctx context.Context, cluster string, ttl time.Duration) (string, time.Time, error)
	AddFederation(ctx context.Context, req ca.AddFederationRequest) (store.FederationPeer, error)
	RemoveFederation(ctx context.Context, trustDomain string) error
	ListFederation(ctx context.Context) ([]store.FederationPeer, error)
	RefreshFederation(ctx context.Context, trustDomain string) error
	Close() error
}

// backend picks the data dir when one was given, else the server.
// withKeys and create matter only for a data dir (see openService).
func (g *globals) backend(cmd *cobra.Command, withKeys, create bool) (backend, error) {
	if g.dataDirSet(cmd) {
		svc, closeFn, err := g.openService(cmd.Context(), withKeys, create)
		if err != nil {
			return nil, err
		}
		return &localBackend{svc: svc, close: closeFn}, nil
	}
	return dialAdmin(g.socket)
}

// localBackend works on a data dir through the authority.
type localBackend struct {
	svc   *ca.Service
	close func()
}

func (l *localBackend) InitRoot(ctx context.Context, req ca.InitRootRequest) (store.Root, error) {
	return l.svc.InitRoot(ctx, localActor(), req)
}
func (l *localBackend) ImportRoot(ctx context.Context, req ca.ImportRootRequest) (store.Root, error) {
	return l.svc.ImportRoot(ctx, localActor(), req)
}
func (l *localBackend) PrepareRoot(ctx context.Context, req ca.PrepareRootRequest) (store.Root, error) {
	return l.svc.PrepareRoot(ctx, localActor(), req)
}
func (l *localBackend) ActivateRoot(ctx context.Context, req ca.PhaseRequest) (ca.PhaseResult, error) {
	return l.svc.ActivateRoot(ctx, localActor(), req)
}
func (l *localBackend) RetireRoot(ctx context.Context, req ca.PhaseRequest) (ca.PhaseResult, error) {
	return l.svc.RetireRoot(ctx, localActor(), req)
}
func (l *localBackend) RollbackRoot(ctx context.Context, req ca.PhaseRequest) (ca.PhaseResult, error) {
	return l.svc.RollbackPrepared(ctx, localActor(), req)
}
func (l *localBackend) RevokeRoot(ctx context.Context, req ca.RevokeRequest) (ca.PhaseResult, error) {
	return l.svc.RevokeRoot(ctx, localActor(), req)
}
func (l *localBackend) RotationStatus(ctx context.Context, ttl time.Duration) (ca.RotationStatus, error) {
	return l.svc.RotationStatus(ctx, ttl)
}
func (l *localBackend) ListRoots(ctx context.Context) ([]store.Root, error) {
	return l.svc.ListRoots(ctx)
}
func (l *localBackend) AddCluster(ctx context.Context, req ca.AddClusterRequest) (store.Cluster, error) {
	return l.svc.AddCluster(ctx, localActor(), req)
}
func (l *localBackend) RemoveCluster(ctx context.Context, name string) error {
	return l.svc.RemoveCluster(ctx, localActor(), name)
}
func (l *localBackend) ListClusters(ctx context.Context) ([]store.Cluster, error) {
	return l.svc.ListClusters(ctx)
}
func (l *localBackend) IssueIntermediate(ctx context.Context, req ca.IssueRequest) (ca.Issued, error) {
	return l.svc.IssueIntermediate(ctx, localActor(), req)
}
func (l *localBackend) ListIntermediates(ctx context.Context, cluster string) ([]store.Intermediate, error) {
	return l.svc.ListIntermediates(ctx, cluster)
}
func (l *localBackend) RevokeIntermediate(ctx context.Context, serial, reason string) (store.Intermediate, error) {
	return l.svc.RevokeIntermediate(ctx, localActor(), serial, reason)
}
func (l *localBackend) TrustBundle(ctx context.Context) (ca.TrustBundle, error) {
	return l.svc.TrustBundle(ctx)
}
func (l *localBackend) ListAudit(ctx context.Context, after int64, limit int) ([]store.AuditEntry, error) {
	return l.svc.Store().ListAudit(ctx, after, limit)
}
func (l *localBackend) VerifyAudit(ctx context.Context) (int, error) {
	v, ok := l.svc.Store().(store.AuditVerifier)
	if !ok {
		return 0, errors.New("this store cannot verify its audit log")
	}
	if err := v.VerifyAudit(ctx); err != nil {
		var ce *store.ChainError
		if errors.As(err, &ce) {
			return 0, tamperError{err}
		}
		return 0, err
	}
	entries, err := l.svc.Store().ListAudit(ctx, 0, 0)
	return len(entries), err
}
func (l *localBackend) CreateToken(ctx context.Context, cluster string, ttl time.Duration) (string, time.Time, error) {
	token, rec, err := authn.NewJoinToken(cluster, ttl, time.Now())
	if err != nil {
		return "", time.Time{}, usageError{err}
	}
	if err := l.svc.CreateJoinToken(ctx, localActor(), rec); err != nil {
		return "", time.Time{}, err
	}
	return token, rec.ExpiresAt, nil
}
func (l *localBackend) AddFederation(ctx context.Context, req ca.AddFederationRequest) (store.FederationPeer, error) {
	return l.svc.AddFederation(ctx, localActor(), req)
}
func (l *localBackend) RemoveFederation(ctx context.Context, td string) error {
	return l.svc.RemoveFederation(ctx, localActor(), td)
}
func (l *localBackend) ListFederation(ctx context.Context) ([]store.FederationPeer, error) {
	return l.svc.ListFederation(ctx)
}
func (l *localBackend) RefreshFederation(context.Context, string) error {
	return usageError{errors.New("federation refresh asks the running server's watchers: drop --data-dir")}
}
func (l *localBackend) Close() error { l.close(); return nil }

// remoteBackend asks the server over its admin socket.
type remoteBackend struct {
	conn *grpc.ClientConn
	c    meshrootv1.AdminClient
}

func dialAdmin(socket string) (*remoteBackend, error) {
	if _, err := os.Stat(socket); err != nil {
		return nil, fmt.Errorf("no meshroot server at %s: start `meshroot serve`, pass --socket, or pass --data-dir to work on a data dir directly", socket)
	}
	conn, err := grpc.NewClient("unix:"+socket, grpc.WithTransportCredentials(server.UnixPeerCredentials()))
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", socket, err)
	}
	return &remoteBackend{conn: conn, c: meshrootv1.NewAdminClient(conn)}, nil
}

func (r *remoteBackend) InitRoot(ctx context.Context, req ca.InitRootRequest) (store.Root, error) {
	m, err := r.c.InitRoot(ctx, &meshrootv1.InitRootRequest{TrustDomain: req.TrustDomain, KeyType: string(req.KeyType), TtlSeconds: int64(req.TTL / time.Second)})
	if err != nil {
		return store.Root{}, err
	}
	return server.RootFromProto(m)
}
func (r *remoteBackend) ImportRoot(context.Context, ca.ImportRootRequest) (store.Root, error) {
	return store.Root{}, usageError{errors.New("root import sends a private key, so it only works on a data dir: stop the server or pass --data-dir")}
}
func (r *remoteBackend) PrepareRoot(ctx context.Context, req ca.PrepareRootRequest) (store.Root, error) {
	m, err := r.c.PrepareRoot(ctx, &meshrootv1.PrepareRootRequest{
		KeyType: string(req.KeyType), TtlSeconds: int64(req.TTL / time.Second), CrossSign: req.CrossSign, DryRun: req.DryRun,
	})
	if err != nil {
		return store.Root{}, err
	}
	if req.DryRun {
		return store.Root{TrustDomain: m.GetTrustDomain(), State: store.RootState(m.GetState())}, nil
	}
	return server.RootFromProto(m)
}
func phaseProto(req ca.PhaseRequest) *meshrootv1.PhaseRequest {
	return &meshrootv1.PhaseRequest{DryRun: req.DryRun, Force: req.Force, WorkloadCertTtlSeconds: int64(req.WorkloadCertTTL / time.Second)}
}
func (r *remoteBackend) phase(m *meshrootv1.PhaseResult, err error) (ca.PhaseResult, error) {
	if err != nil {
		return ca.PhaseResult{}, err
	}
	return server.PhaseResultFromProto(m), nil
}
func (r *remoteBackend) ActivateRoot(ctx context.Context, req ca.PhaseRequest) (ca.PhaseResult, error) {
	return r.phase(r.c.ActivateRoot(ctx, phaseProto(req)))
}
func (r *remoteBackend) RetireRoot(ctx context.Context, req ca.PhaseRequest) (ca.PhaseResult, error) {
	return r.phase(r.c.RetireRoot(ctx, phaseProto(req)))
}
func (r *remoteBackend) RollbackRoot(ctx context.Context, req ca.PhaseRequest) (ca.PhaseResult, error) {
	return r.phase(r.c.RollbackRoot(ctx, phaseProto(req)))
}
func (r *remoteBackend) RevokeRoot(ctx context.Context, req ca.RevokeRequest) (ca.PhaseResult, error) {
	return r.phase(r.c.RevokeRoot(ctx, &meshrootv1.RevokeRootRequest{RootId: req.RootID, Emergency: req.Emergency, KeyType: string(req.KeyType), DryRun: req.DryRun}))
}
func (r *remoteBackend) RotationStatus(ctx context.Context, ttl time.Duration) (ca.RotationStatus, error) {
	m, err := r.c.RotationStatus(ctx, &meshrootv1.RotationStatusRequest{WorkloadCertTtlSeconds: int64(ttl / time.Second)})
	if err != nil {
		return ca.RotationStatus{}, err
	}
	return server.RotationStatusFromProto(m)
}
func (r *remoteBackend) ListRoots(ctx context.Context) ([]store.Root, error) {
	resp, err := r.c.ListRoots(ctx, &meshrootv1.ListRootsRequest{})
	if err != nil {
		return nil, err
	}
	out := make([]store.Root, 0, len(resp.GetRoots()))
	for _, m := range resp.GetRoots() {
		root, err := server.RootFromProto(m)
		if err != nil {
			return nil, err
		}
		out = append(out, root)
	}
	return out, nil
}
func (r *remoteBackend) AddCluster(ctx context.Context, req ca.AddClusterRequest) (store.Cluster, error) {
	m, err := r.c.AddCluster(ctx, &meshrootv1.AddClusterRequest{Name: req.Name, TrustDomain: req.TrustDomain, Auth: server.AuthToProto(req.Auth), PermitDns: req.PermitDNS, PermitIps: req.PermitIPs})
	if err != nil {
		return store.Cluster{}, err
	}
	return server.ClusterFromProto(m), nil
}
func (r *remoteBackend) RemoveCluster(ctx context.Context, name string) error {
	_, err := r.c.RemoveCluster(ctx, &meshrootv1.RemoveClusterRequest{Name: name})
	return err
}
func (r *remoteBackend) ListClusters(ctx context.Context) ([]store.Cluster, error) {
	resp, err := r.c.ListClusters(ctx, &meshrootv1.ListClustersRequest{})
	if err != nil {
		return nil, err
	}
	out := make([]store.Cluster, 0, len(resp.GetClusters()))
	for _, m := range resp.GetClusters() {
		out = append(out, server.ClusterFromProto(m))
	}
	return out, nil
}
func (r *remoteBackend) IssueIntermediate(ctx context.Context, req ca.IssueRequest) (ca.Issued, error) {
	csr := req.CSRData
	if req.CSR != nil {
		csr = req.CSR.Raw
	}
	resp, err := r.c.IssueIntermediate(ctx, &meshrootv1.IssueIntermediateRequest{
		Cluster: req.Cluster, Csr: csr, TtlSeconds: int64(req.TTL / time.Second), TrustDomainConstraint: req.TrustDomainConstraint,
	})
	if err != nil {
		return ca.Issued{}, err
	}
	return server.IssuedFromProto(resp, "")
}
func (r *remoteBackend) ListIntermediates(ctx context.Context, cluster string) ([]store.Intermediate, error) {
	resp, err := r.c.ListIntermediates(ctx, &meshrootv1.ListIntermediatesRequest{Cluster: cluster})
	if err != nil {
		return nil, err
	}
	out := make([]store.Intermediate, 0, len(resp.GetIntermediates()))
	for _, m := range resp.GetIntermediates() {
		out = append(out, server.IntermediateFromProto(m))
	}
	return out, nil
}
func (r *remoteBackend) RevokeIntermediate(ctx context.Context, serial, reason string) (store.Intermediate, error) {
	m, err := r.c.RevokeIntermediate(ctx, &meshrootv1.RevokeIntermediateRequest{Serial: serial, Reason: reason})
	if err != nil {
		return store.Intermediate{}, err
	}
	return server.IntermediateFromProto(m), nil
}
func (r *remoteBackend) TrustBundle(ctx context.Context) (ca.TrustBundle, error) {
	m, err := r.c.GetTrustBundle(ctx, &meshrootv1.GetTrustBundleRequest{})
	if err != nil {
		return ca.TrustBundle{}, err
	}
	return server.BundleFromProto(m) // carries the server's refresh hint
}
func (r *remoteBackend) ListAudit(ctx context.Context, after int64, limit int) ([]store.AuditEntry, error) {
	resp, err := r.c.ListAudit(ctx, &meshrootv1.ListAuditRequest{AfterSeq: after, Limit: int32(min(limit, 1<<30))})
	if err != nil {
		return nil, err
	}
	out := make([]store.AuditEntry, 0, len(resp.GetEntries()))
	for _, m := range resp.GetEntries() {
		out = append(out, server.AuditFromProto(m))
	}
	return out, nil
}
func (r *remoteBackend) VerifyAudit(ctx context.Context) (int, error) {
	resp, err := r.c.VerifyAudit(ctx, &meshrootv1.VerifyAuditRequest{})
	if err != nil {
		return 0, err
	}
	return int(resp.GetEntries()), nil
}
func (r *remoteBackend) CreateToken(ctx context.Context, cluster string, ttl time.Duration) (string, time.Time, error) {
	resp, err := r.c.CreateToken(ctx, &meshrootv1.CreateTokenRequest{Cluster: cluster, TtlSeconds: int64(ttl / time.Second)})
	if err != nil {
		return "", time.Time{}, err
	}
	return resp.GetToken(), resp.GetExpiresAt().AsTime(), nil
}
func (r *remoteBackend) AddFederation(ctx context.Context, req ca.AddFederationRequest) (store.FederationPeer, error) {
	m, err := r.c.AddFederation(ctx, &meshrootv1.AddFederationRequest{
		TrustDomain: req.TrustDomain, Url: req.URL, Profile: string(req.Profile),
		EndpointSpiffeId: req.EndpointSPIFFEID, BootstrapBundle: req.BootstrapBundle,
	})
	if err != nil {
		return store.FederationPeer{}, err
	}
	return server.FederationPeerFromProto(m), nil
}
func (r *remoteBackend) RemoveFederation(ctx context.Context, td string) error {
	_, err := r.c.RemoveFederation(ctx, &meshrootv1.RemoveFederationRequest{TrustDomain: td})
	return err
}
func (r *remoteBackend) ListFederation(ctx context.Context) ([]store.FederationPeer, error) {
	resp, err := r.c.ListFederation(ctx, &meshrootv1.ListFederationRequest{})
	if err != nil {
		return nil, err
	}
	out := make([]store.FederationPeer, 0, len(resp.GetPeers()))
	for _, m := range resp.GetPeers() {
		out = append(out, server.FederationPeerFromProto(m))
	}
	return out, nil
}
func (r *remoteBackend) RefreshFederation(ctx context.Context, td string) error {
	_, err := r.c.RefreshFederation(ctx, &meshrootv1.RefreshFederationRequest{TrustDomain: td})
	return err
}
func (r *remoteBackend) Close() error { return r.conn.Close() }
