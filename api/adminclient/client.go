// Package adminclient is the client of meshroot's admin API. Its Client
// implements every interface of ca.Admin, as the authority itself does, so
// the CLI writes each command once and runs it against the server (through
// Client.Admin) or against a data dir (through ca.Service.Admin).
//
// Adding a verb: the method on its ca.Admin interface and *ca.Service, the rpc in
// api/meshroot/v1/admin.proto with its server method (server/admin*.go),
// the conversion of any new message (api/wire), a method here, and the CLI
// command. The methods here are one call each: see call.
package adminclient

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/api/wire"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// Client calls the admin API over a gRPC connection. The server, not the
// client, decides who acts (from the connection's credentials): an actor
// in the context is not sent.
type Client struct {
	c meshrootv1.AdminClient
}

// New returns a client over cc, typically a connection to the server's
// admin unix socket.
func New(cc grpc.ClientConnInterface) *Client {
	return &Client{c: meshrootv1.NewAdminClient(cc)}
}

// Admin returns c as the authority's administrative surface.
func (c *Client) Admin() ca.Admin {
	return ca.Admin{RootAdmin: c, ClusterAdmin: c, AuditAdmin: c, FederationAdmin: c, PolicyAdmin: c, AdminCertAdmin: c, QuarantineAdmin: c}
}

// call makes one rpc and converts its answer.
func call[Req, Resp proto.Message, T any](ctx context.Context, rpc func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req, conv func(Resp) (T, error)) (T, error) {
	resp, err := rpc(ctx, req)
	if err != nil {
		var zero T
		return zero, err
	}
	return conv(resp)
}

// ok adapts a conversion that cannot fail.
func ok[M, T any](f func(M) T) func(M) (T, error) {
	return func(m M) (T, error) { return f(m), nil }
}

// none is the conversion of an empty answer.
func none[M any](M) (struct{}, error) { return struct{}{}, nil }

// InitRoot implements ca.RootAdmin.
func (c *Client) InitRoot(ctx context.Context, req ca.InitRootRequest) (store.Root, error) {
	return call(ctx, c.c.InitRoot, wire.InitRootRequestToProto(req), wire.RootFromProto)
}

// PrepareRoot implements ca.RootAdmin.
func (c *Client) PrepareRoot(ctx context.Context, req ca.PrepareRootRequest) (store.Root, error) {
	return call(ctx, c.c.PrepareRoot, wire.PrepareRootRequestToProto(req), wire.RootFromProto)
}

// ActivateRoot implements ca.RootAdmin.
func (c *Client) ActivateRoot(ctx context.Context, req ca.PhaseRequest) (ca.PhaseResult, error) {
	return call(ctx, c.c.ActivateRoot, wire.PhaseRequestToProto(req), ok(wire.PhaseResultFromProto))
}

// RetireRoot implements ca.RootAdmin.
func (c *Client) RetireRoot(ctx context.Context, req ca.PhaseRequest) (ca.PhaseResult, error) {
	return call(ctx, c.c.RetireRoot, wire.PhaseRequestToProto(req), ok(wire.PhaseResultFromProto))
}

// RollbackPrepared implements ca.RootAdmin.
func (c *Client) RollbackPrepared(ctx context.Context, req ca.PhaseRequest) (ca.PhaseResult, error) {
	return call(ctx, c.c.RollbackRoot, wire.PhaseRequestToProto(req), ok(wire.PhaseResultFromProto))
}

// RevokeRoot implements ca.RootAdmin.
func (c *Client) RevokeRoot(ctx context.Context, req ca.RevokeRequest) (ca.PhaseResult, error) {
	return call(ctx, c.c.RevokeRoot, wire.RevokeRequestToProto(req), ok(wire.PhaseResultFromProto))
}

// RotationStatus implements ca.RootAdmin.
func (c *Client) RotationStatus(ctx context.Context, workloadCertTTL time.Duration) (ca.RotationStatus, error) {
	return call(ctx, c.c.RotationStatus, &meshrootv1.RotationStatusRequest{WorkloadCertTtlSeconds: wire.Seconds(workloadCertTTL)}, wire.RotationStatusFromProto)
}

// ListRoots implements ca.RootAdmin.
func (c *Client) ListRoots(ctx context.Context) ([]store.Root, error) {
	return call(ctx, c.c.ListRoots, &meshrootv1.ListRootsRequest{}, func(m *meshrootv1.ListRootsResponse) ([]store.Root, error) {
		return wire.RootsFromProto(m.GetRoots())
	})
}

// TrustBundle implements ca.RootAdmin; the bundle carries the server's
// refresh hint.
func (c *Client) TrustBundle(ctx context.Context) (ca.TrustBundle, error) {
	return call(ctx, c.c.GetTrustBundle, &meshrootv1.GetTrustBundleRequest{}, wire.BundleFromProto)
}

// AddCluster implements ca.ClusterAdmin.
func (c *Client) AddCluster(ctx context.Context, req ca.AddClusterRequest) (store.Cluster, error) {
	return call(ctx, c.c.AddCluster, wire.AddClusterRequestToProto(req), ok(wire.ClusterFromProto))
}

// SetClusterGate implements ca.ClusterAdmin.
func (c *Client) SetClusterGate(ctx context.Context, name, gate string) error {
	_, err := call(ctx, c.c.SetClusterGate, &meshrootv1.SetClusterGateRequest{Name: name, Gate: gate}, none)
	return err
}

// RemoveCluster implements ca.ClusterAdmin.
func (c *Client) RemoveCluster(ctx context.Context, name string) error {
	_, err := call(ctx, c.c.RemoveCluster, &meshrootv1.RemoveClusterRequest{Name: name}, none)
	return err
}

// ListClusters implements ca.ClusterAdmin.
func (c *Client) ListClusters(ctx context.Context) ([]store.Cluster, error) {
	return call(ctx, c.c.ListClusters, &meshrootv1.ListClustersRequest{}, func(m *meshrootv1.ListClustersResponse) ([]store.Cluster, error) {
		return wire.List(m.GetClusters(), wire.ClusterFromProto), nil
	})
}

// ShowCluster implements ca.ClusterAdmin.
func (c *Client) ShowCluster(ctx context.Context, name string) (ca.ClusterDetail, error) {
	return call(ctx, c.c.ShowCluster, &meshrootv1.ShowClusterRequest{Name: name}, ok(wire.ClusterDetailFromProto))
}

// CreateJoinToken implements ca.ClusterAdmin.
func (c *Client) CreateJoinToken(ctx context.Context, req ca.JoinTokenRequest) (ca.JoinToken, error) {
	return call(ctx, c.c.CreateToken, wire.JoinTokenRequestToProto(req), func(m *meshrootv1.CreateTokenResponse) (ca.JoinToken, error) {
		return wire.JoinTokenFromProto(m, req.Cluster), nil
	})
}

// IssueIntermediate implements ca.ClusterAdmin.
func (c *Client) IssueIntermediate(ctx context.Context, req ca.IssueRequest) (ca.Issued, error) {
	return call(ctx, c.c.IssueIntermediate, wire.IssueRequestToProto(req), func(m *meshrootv1.SignIntermediateResponse) (ca.Issued, error) {
		return wire.IssuedFromProto(m, "")
	})
}

// ListIntermediates implements ca.ClusterAdmin.
func (c *Client) ListIntermediates(ctx context.Context, cluster string) ([]store.Intermediate, error) {
	return call(ctx, c.c.ListIntermediates, &meshrootv1.ListIntermediatesRequest{Cluster: cluster}, func(m *meshrootv1.ListIntermediatesResponse) ([]store.Intermediate, error) {
		return wire.List(m.GetIntermediates(), wire.IntermediateFromProto), nil
	})
}

// RevokeIntermediate implements ca.ClusterAdmin.
func (c *Client) RevokeIntermediate(ctx context.Context, serial, reason string) (store.Intermediate, error) {
	return call(ctx, c.c.RevokeIntermediate, &meshrootv1.RevokeIntermediateRequest{Serial: serial, Reason: reason}, ok(wire.IntermediateFromProto))
}

// ListAudit implements ca.AuditAdmin. The server caps one answer's length.
func (c *Client) ListAudit(ctx context.Context, afterSeq int64, limit int) ([]store.AuditEntry, error) {
	req := &meshrootv1.ListAuditRequest{AfterSeq: afterSeq, Limit: int32(min(limit, 1<<30))}
	return call(ctx, c.c.ListAudit, req, func(m *meshrootv1.ListAuditResponse) ([]store.AuditEntry, error) {
		return wire.List(m.GetEntries(), wire.AuditFromProto), nil
	})
}

// VerifyAudit implements ca.AuditAdmin; a broken chain is a DATA_LOSS status.
func (c *Client) VerifyAudit(ctx context.Context) (int, error) {
	return call(ctx, c.c.VerifyAudit, &meshrootv1.VerifyAuditRequest{}, func(m *meshrootv1.VerifyAuditResponse) (int, error) {
		return int(m.GetEntries()), nil
	})
}

// AddFederation implements ca.FederationAdmin.
func (c *Client) AddFederation(ctx context.Context, req ca.AddFederationRequest) (store.FederationPeer, error) {
	return call(ctx, c.c.AddFederation, wire.AddFederationRequestToProto(req), ok(wire.FederationPeerFromProto))
}

// RemoveFederation implements ca.FederationAdmin.
func (c *Client) RemoveFederation(ctx context.Context, trustDomain string) error {
	_, err := call(ctx, c.c.RemoveFederation, &meshrootv1.RemoveFederationRequest{TrustDomain: trustDomain}, none)
	return err
}

// ListFederation implements ca.FederationAdmin.
func (c *Client) ListFederation(ctx context.Context) ([]store.FederationPeer, error) {
	return call(ctx, c.c.ListFederation, &meshrootv1.ListFederationRequest{}, func(m *meshrootv1.ListFederationResponse) ([]store.FederationPeer, error) {
		return wire.List(m.GetPeers(), wire.FederationPeerFromProto), nil
	})
}

// RefreshFederation implements ca.FederationAdmin.
func (c *Client) RefreshFederation(ctx context.Context, trustDomain string) (store.FederationPeer, error) {
	return call(ctx, c.c.RefreshFederation, &meshrootv1.RefreshFederationRequest{TrustDomain: trustDomain}, ok(wire.FederationPeerFromProto))
}

// AnchorAudit implements ca.AuditAdmin.
func (c *Client) AnchorAudit(ctx context.Context) ([]byte, error) {
	return call(ctx, c.c.AnchorAudit, &meshrootv1.AnchorAuditRequest{}, ok((*meshrootv1.AnchorAuditResponse).GetAnchorPem))
}

// Policy implements ca.PolicyAdmin.
func (c *Client) Policy(ctx context.Context) (ca.Policy, bool, error) {
	resp, err := c.c.GetPolicy(ctx, &meshrootv1.GetPolicyRequest{})
	if err != nil {
		return ca.Policy{}, false, err
	}
	p, err := ca.ParsePolicyJSON(resp.GetPolicyJson())
	return p, resp.GetStored(), err
}

// SetPolicy implements ca.PolicyAdmin.
func (c *Client) SetPolicy(ctx context.Context, p ca.Policy) (ca.Policy, bool, error) {
	b, err := ca.PolicyJSON(p)
	if err != nil {
		return ca.Policy{}, false, err
	}
	resp, err := c.c.SetPolicy(ctx, &meshrootv1.SetPolicyRequest{PolicyJson: b})
	if err != nil {
		return ca.Policy{}, false, err
	}
	stored, err := ca.ParsePolicyJSON(resp.GetPolicyJson())
	return stored, resp.GetChanged(), err
}

// IssueAdminCert implements ca.AdminCertAdmin.
func (c *Client) IssueAdminCert(ctx context.Context, req ca.AdminCertRequest) (ca.AdminCertIssued, error) {
	return call(ctx, c.c.IssueAdminCert, wire.IssueAdminCertRequestToProto(req), wire.AdminCertIssuedFromProto)
}

// ListAdminCerts implements ca.AdminCertAdmin.
func (c *Client) ListAdminCerts(ctx context.Context) ([]store.AdminCert, error) {
	return call(ctx, c.c.ListAdminCerts, &meshrootv1.ListAdminCertsRequest{}, ok(wire.AdminCertsFromProto))
}

// RevokeAdminCert implements ca.AdminCertAdmin.
func (c *Client) RevokeAdminCert(ctx context.Context, serial string) (store.AdminCert, error) {
	return call(ctx, c.c.RevokeAdminCert, &meshrootv1.RevokeAdminCertRequest{Serial: serial}, ok(wire.AdminCertFromProto))
}
