package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// AdminMethodRoles is the one table that authorizes the remote admin
// listener: each Admin rpc's full method name and the weakest role that
// may call it. Viewers read (List*, Show*, Get*, RotationStatus,
// VerifyAudit); operators do everything. An rpc missing here is refused to
// everyone (a test checks that every Admin rpc is listed). The unix socket
// is not governed by it: whoever can open the socket has full authority.
var AdminMethodRoles = map[string]ca.AdminRole{
	meshrootv1.Admin_ListRoots_FullMethodName:         ca.RoleViewer,
	meshrootv1.Admin_RotationStatus_FullMethodName:    ca.RoleViewer,
	meshrootv1.Admin_ListClusters_FullMethodName:      ca.RoleViewer,
	meshrootv1.Admin_ShowCluster_FullMethodName:       ca.RoleViewer,
	meshrootv1.Admin_ListIntermediates_FullMethodName: ca.RoleViewer,
	meshrootv1.Admin_GetTrustBundle_FullMethodName:    ca.RoleViewer,
	meshrootv1.Admin_ListAudit_FullMethodName:         ca.RoleViewer,
	meshrootv1.Admin_VerifyAudit_FullMethodName:       ca.RoleViewer,
	meshrootv1.Admin_ListFederation_FullMethodName:    ca.RoleViewer,
	meshrootv1.Admin_GetPolicy_FullMethodName:         ca.RoleViewer,
	meshrootv1.Admin_ListAdminCerts_FullMethodName:    ca.RoleViewer,
	meshrootv1.Admin_ListQuarantines_FullMethodName:   ca.RoleViewer,

	meshrootv1.Admin_InitRoot_FullMethodName:           ca.RoleOperator,
	meshrootv1.Admin_PrepareRoot_FullMethodName:        ca.RoleOperator,
	meshrootv1.Admin_ActivateRoot_FullMethodName:       ca.RoleOperator,
	meshrootv1.Admin_RetireRoot_FullMethodName:         ca.RoleOperator,
	meshrootv1.Admin_RollbackRoot_FullMethodName:       ca.RoleOperator,
	meshrootv1.Admin_RevokeRoot_FullMethodName:         ca.RoleOperator,
	meshrootv1.Admin_AddCluster_FullMethodName:         ca.RoleOperator,
	meshrootv1.Admin_RemoveCluster_FullMethodName:      ca.RoleOperator,
	meshrootv1.Admin_IssueIntermediate_FullMethodName:  ca.RoleOperator,
	meshrootv1.Admin_RevokeIntermediate_FullMethodName: ca.RoleOperator,
	meshrootv1.Admin_CreateToken_FullMethodName:        ca.RoleOperator,
	meshrootv1.Admin_AddFederation_FullMethodName:      ca.RoleOperator,
	meshrootv1.Admin_RemoveFederation_FullMethodName:   ca.RoleOperator,
	meshrootv1.Admin_RefreshFederation_FullMethodName:  ca.RoleOperator,
	meshrootv1.Admin_AnchorAudit_FullMethodName:        ca.RoleOperator,
	meshrootv1.Admin_SetPolicy_FullMethodName:          ca.RoleOperator,
	meshrootv1.Admin_IssueAdminCert_FullMethodName:     ca.RoleOperator,
	meshrootv1.Admin_RevokeAdminCert_FullMethodName:    ca.RoleOperator,
	meshrootv1.Admin_QuarantineCluster_FullMethodName:  ca.RoleOperator,
	meshrootv1.Admin_ReleaseCluster_FullMethodName:     ca.RoleOperator,
	meshrootv1.Admin_SetClusterGate_FullMethodName:     ca.RoleOperator,
}

// remoteAdmin serves the Admin service on TCP to holders of an admin
// client certificate (mTLS against the admin CA), authorized by role.
type remoteAdmin struct {
	svc  *ca.Service
	ln   net.Listener
	grpc *grpc.Server
	tls  *tls.Config
}

// newRemoteAdmin binds addr and builds the remote admin server: the
// server's own certificate (from the server CA, as on the Issuer
// listener), client certificates required and verified against the admin
// CA, made now when there is none yet (audited as admin_ca.init).
func newRemoteAdmin(ctx context.Context, svc *ca.Service, addr string, certs *serverCerts, adm meshrootv1.AdminServer) (*remoteAdmin, error) {
	caCert, err := svc.AdminCA(ca.WithActor(ctx, "serve:admin-listen"))
	if err != nil {
		return nil, fmt.Errorf("server: admin CA for the remote admin listener: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	r := &remoteAdmin{svc: svc, tls: &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: certs.GetCertificate,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		ClientCAs:      pool,
	}}
	if r.ln, err = net.Listen("tcp", addr); err != nil {
		return nil, fmt.Errorf("server: listen %s (remote admin): %w", addr, err)
	}
	r.grpc = grpc.NewServer(grpc.Creds(credentials.NewTLS(r.tls)),
		grpc.ChainUnaryInterceptor(countUnary, r.unary), grpc.ChainStreamInterceptor(countStream, r.stream))
	meshrootv1.RegisterAdminServer(r.grpc, adm)
	return r, nil
}

// AdminAddr is the remote admin listener's address ("" when off).
func (s *Server) AdminAddr() string {
	if s.remoteAdm == nil {
		return ""
	}
	return s.remoteAdm.ln.Addr().String()
}

// AdminTLSConfig is the TLS configuration of the remote admin listener
// (nil when off): the server certificate, and a client certificate of the
// admin CA required. Another listener guarded by admin mTLS (the fleet
// page) serves with a clone of it and calls AuthorizeAdmin per request.
func (s *Server) AdminTLSConfig() *tls.Config {
	if s.remoteAdm == nil {
		return nil
	}
	return s.remoteAdm.tls.Clone()
}

// AuthorizeAdmin decides whether the peer of a TLS connection that
// verified against the admin CA (AdminTLSConfig) may do what needs role
// min: its certificate is recorded, not revoked nor expired, and its role
// is at least min. It returns the actor for the audit log
// ("admin-cert:NAME(ROLE)"), or an error with a gRPC status code
// (Unauthenticated or PermissionDenied) to report. what names the action
// in refusals and their audit rows ("fleet page").
func (s *Server) AuthorizeAdmin(ctx context.Context, state *tls.ConnectionState, min ca.AdminRole, what string) (ca.Actor, error) {
	if s.remoteAdm == nil {
		return "", status.Error(codes.Unavailable, "remote admin is off (adminListen)")
	}
	rec, err := s.remoteAdm.authorize(ctx, state, min, what)
	return ca.AdminCertActor(rec), err
}

// adminCertKey is the context key of the admin certificate record the
// remote listener authorized a call with.
type adminCertKey struct{}

func (r *remoteAdmin) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := r.check(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (r *remoteAdmin) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if _, err := r.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// check authorizes one call by the table, and returns ctx carrying the
// certificate's record (for the audit actor).
func (r *remoteAdmin) check(ctx context.Context, method string) (context.Context, error) {
	min, listed := AdminMethodRoles[method]
	if !listed {
		return nil, status.Errorf(codes.PermissionDenied, "%s is not in the remote admin authorization table: use the admin socket", method)
	}
	var state *tls.ConnectionState
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			state = &ti.State
		}
	}
	rec, err := r.authorize(ctx, state, min, method)
	if err != nil {
		return nil, err
	}
	return context.WithValue(ctx, adminCertKey{}, rec), nil
}

// authorize checks the verified admin client certificate of state against
// its record and min; refusals of a known certificate are audited.
func (r *remoteAdmin) authorize(ctx context.Context, state *tls.ConnectionState, min ca.AdminRole, what string) (store.AdminCert, error) {
	if state == nil || len(state.VerifiedChains) == 0 || len(state.VerifiedChains[0]) == 0 {
		return store.AdminCert{}, status.Error(codes.Unauthenticated, "no verified admin client certificate: get one with `meshroot admin cert issue` and pass --admin-cert")
	}
	leaf := state.VerifiedChains[0][0]
	rec, err := r.svc.CheckAdminCert(ctx, leaf)
	actor := ca.Actor(fmt.Sprintf("admin-cert:%s(serial %s)", leaf.Subject.CommonName, ca.SerialHex(leaf.SerialNumber)))
	if err != nil {
		if !errors.Is(err, ca.ErrAdminCertRefused) {
			return store.AdminCert{}, status.Errorf(codes.Unavailable, "checking the admin certificate: %v", err)
		}
		_ = r.svc.AuditRefusal(ctx, actor, "admin.remote", what, err.Error())
		return store.AdminCert{}, status.Error(codes.Unauthenticated, err.Error())
	}
	if !ca.AdminRole(rec.Role).Allows(min) {
		err := fmt.Errorf("role %s may not call %s: it needs %s", rec.Role, what, min)
		_ = r.svc.AuditRefusal(ctx, ca.AdminCertActor(rec), "admin.remote", what, err.Error())
		return store.AdminCert{}, status.Error(codes.PermissionDenied, err.Error())
	}
	return rec, nil
}

// serve serves until stop.
func (r *remoteAdmin) serve() error {
	if r == nil {
		return nil
	}
	return r.grpc.Serve(r.ln)
}

// stop stops the server: gracefully, or at once when graceful is false.
func (r *remoteAdmin) stop(graceful bool) {
	switch {
	case r == nil:
	case graceful:
		r.grpc.GracefulStop()
	default:
		r.grpc.Stop()
	}
}

// remoteAdminActor returns the actor of a call the remote listener
// authorized ("" when ctx carries none).
func remoteAdminActor(ctx context.Context) string {
	rec, ok := ctx.Value(adminCertKey{}).(store.AdminCert)
	if !ok {
		return ""
	}
	return string(ca.AdminCertActor(rec))
}

// remoteAdminTimeout bounds the admin CA's creation at start.
const remoteAdminTimeout = 30 * time.Second
