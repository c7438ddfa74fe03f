package server_test

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys/disk"
	"github.com/meshroot/meshroot/server"
	"github.com/meshroot/meshroot/store/sqlite"
)

// remoteAdminServer is a real server with the remote admin listener on
// 127.0.0.1, bootstrapped (a root, clusters east and west); open returns a
// second authority over the same store and keys, with its own clock.
type remoteAdminServer struct {
	*testServer
	roots []*x509.Certificate
	open  func(now func() time.Time) *ca.Service
}

func startRemoteAdmin(t *testing.T, opts ...func(*server.ServerConfig)) *remoteAdminServer {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(t.Context(), filepath.Join(dir, "meshroot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	open := func(now func() time.Time) *ca.Service {
		km, err := disk.New(disk.Options{Dir: filepath.Join(dir, "keys"), InsecurePlaintext: true})
		if err != nil {
			t.Fatal(err)
		}
		svc, err := ca.NewService(st, km, ca.Policy{})
		if err != nil {
			t.Fatal(err)
		}
		if now != nil {
			svc.SetClock(now)
		}
		return svc
	}
	ts := startServer(t, func(c *server.ServerConfig) {
		c.Service, c.Store, c.AdminListen = open(nil), st, "127.0.0.1:0"
		c.Log = slog.New(slog.DiscardHandler)
		for _, o := range opts {
			o(c)
		}
	})
	return &remoteAdminServer{testServer: ts, roots: ts.bootstrap(t), open: open}
}

// issue has the admin socket issue an admin certificate for a fresh key.
func (rs *remoteAdminServer) issue(t *testing.T, name, role string, ttl time.Duration) (*tls.Certificate, *meshrootv1.AdminCert) {
	t.Helper()
	req, key := csr(t)
	resp, err := rs.admin.IssueAdminCert(t.Context(), &meshrootv1.IssueAdminCertRequest{Name: name, Role: role, TtlSeconds: int64(ttl / time.Second), Csr: req.Raw})
	if err != nil {
		t.Fatal(err)
	}
	return tlsCert(t, resp.GetChainPem(), key), resp.GetCert()
}

func tlsCert(t *testing.T, chainPEM []byte, key *tls.Certificate) *tls.Certificate {
	t.Helper()
	chain, err := ca.ParseCerts(chainPEM)
	if err != nil {
		t.Fatal(err)
	}
	c := &tls.Certificate{PrivateKey: key.PrivateKey, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// remote dials the remote admin listener trusting the trust domain's
// roots, presenting cert (none when nil).
func (rs *remoteAdminServer) remote(t *testing.T, cert *tls.Certificate) meshrootv1.AdminClient {
	t.Helper()
	pool := x509.NewCertPool()
	for _, r := range rs.roots {
		pool.AddCert(r)
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	if cert != nil {
		// Sent whatever CAs the server asks for, so that the server's own
		// verification is what refuses a wrong certificate.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	conn, err := grpc.NewClient(rs.srv.AdminAddr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return meshrootv1.NewAdminClient(conn)
}

// handshake completes a TLS handshake with the remote admin listener
// presenting cert and returns the server's refusal: under TLS 1.3 the
// client learns of it on its first read. A server that accepted the
// certificate waits for the client to speak, which ends the read with a
// timeout: no error.
func (rs *remoteAdminServer) handshake(t *testing.T, cert *tls.Certificate) error {
	t.Helper()
	cfg := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	conn, err := tls.Dial("tcp", rs.srv.AdminAddr(), cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	if err == nil {
		return nil // the server spoke first (HTTP/2 settings): accepted
	}
	return err
}

func lastAuditActor(t *testing.T, rs *remoteAdminServer) (actor, action, result string) {
	t.Helper()
	resp, err := rs.admin.ListAudit(t.Context(), &meshrootv1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	es := resp.GetEntries()
	e := es[len(es)-1]
	return e.GetActor(), e.GetAction(), e.GetResult()
}

func TestRemoteAdminRoles(t *testing.T) {
	rs := startRemoteAdmin(t)
	ctx := t.Context()
	viewerCert, _ := rs.issue(t, "vera", "viewer", time.Hour)
	operatorCert, _ := rs.issue(t, "otto", "operator", 0)
	if got := operatorCert.Leaf.NotAfter.Sub(operatorCert.Leaf.NotBefore); got < 8*time.Hour || got > 8*time.Hour+2*time.Minute {
		t.Errorf("default admin certificate lifetime %s, want 8h", got)
	}

	viewer := rs.remote(t, viewerCert)
	list, err := viewer.ListClusters(ctx, &meshrootv1.ListClustersRequest{})
	if err != nil || len(list.GetClusters()) != 2 {
		t.Fatalf("viewer ListClusters = %v, %v; want the 2 clusters", list, err)
	}
	if _, err := viewer.GetTrustBundle(ctx, &meshrootv1.GetTrustBundleRequest{}); err != nil {
		t.Fatalf("viewer GetTrustBundle: %v", err)
	}
	_, err = viewer.AddCluster(ctx, &meshrootv1.AddClusterRequest{Name: "north"})
	wantCode(t, err, codes.PermissionDenied, "role viewer may not call")
	_, err = viewer.IssueAdminCert(ctx, &meshrootv1.IssueAdminCertRequest{Name: "mallory", Role: "operator"})
	wantCode(t, err, codes.PermissionDenied, "needs operator")
	if actor, action, result := lastAuditActor(t, rs); actor != "admin-cert:vera(viewer)" || action != "admin.remote" || result != "denied" {
		t.Errorf("last audit row after a refused viewer call: %s %s %s; want admin-cert:vera(viewer) admin.remote denied", actor, action, result)
	}

	operator := rs.remote(t, operatorCert)
	if _, err := operator.AddCluster(ctx, &meshrootv1.AddClusterRequest{Name: "north"}); err != nil {
		t.Fatalf("operator AddCluster: %v", err)
	}
	if actor, action, result := lastAuditActor(t, rs); actor != "admin-cert:otto(operator)" || action != "cluster.add" || result != "ok" {
		t.Errorf("last audit row after the operator's AddCluster: %s %s %s; want admin-cert:otto(operator) cluster.add ok", actor, action, result)
	}
	// An operator can issue admin certificates remotely; a viewer cannot.
	req, _ := csr(t)
	if _, err := operator.IssueAdminCert(ctx, &meshrootv1.IssueAdminCertRequest{Name: "vic", Role: "viewer", Csr: req.Raw}); err != nil {
		t.Fatalf("operator IssueAdminCert: %v", err)
	}
	_, err = operator.IssueAdminCert(ctx, &meshrootv1.IssueAdminCertRequest{Name: "long", Role: "viewer", TtlSeconds: 25 * 3600, Csr: req.Raw})
	wantCode(t, err, codes.InvalidArgument, "lifetime")
}

func TestRemoteAdminRefusesOtherCertificates(t *testing.T) {
	rs := startRemoteAdmin(t)
	ctx := t.Context()
	// refused checks that the TLS handshake itself refuses cert with the
	// alert named by alert, and that an Admin call fails.
	refused := func(name string, cert *tls.Certificate, alert string) {
		t.Helper()
		if err := rs.handshake(t, cert); err == nil || !strings.Contains(err.Error(), alert) {
			t.Errorf("%s: handshake error %v; want the alert %q", name, err, alert)
		}
		_, err := rs.remote(t, cert).ListClusters(ctx, &meshrootv1.ListClustersRequest{})
		if status.Code(err) != codes.Unavailable {
			t.Errorf("%s: ListClusters = %v; want Unavailable (no connection)", name, err)
		}
	}
	refused("no client certificate", nil, "certificate required")
	good, _ := rs.issue(t, "gina", "viewer", time.Hour)
	if err := rs.handshake(t, good); err != nil {
		t.Fatalf("a valid admin certificate: handshake error %v", err)
	}

	// A cluster intermediate (signed by the trust domain's root), and a
	// leaf it signs naming an operator: both chain to the trust domain,
	// not to the admin CA.
	req, key := csr(t)
	resp, err := rs.admin.IssueIntermediate(ctx, &meshrootv1.IssueIntermediateRequest{Cluster: "east", Csr: req.Raw})
	if err != nil {
		t.Fatal(err)
	}
	inter := &tls.Certificate{Certificate: resp.GetCertChain(), PrivateKey: key.PrivateKey}
	refused("cluster intermediate from the trust domain's root", inter, "unknown certificate authority")
	interCert, _ := x509.ParseCertificate(resp.GetCertChain()[0])
	_, leafKey := csr(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "otto", OrganizationalUnit: []string{"operator"}, Organization: []string{ca.AdminCertOrganization}},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, interCert, leafKey.PrivateKey.(crypto.Signer).Public(), key.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	forged := &tls.Certificate{Certificate: append([][]byte{der}, resp.GetCertChain()...), PrivateKey: leafKey.PrivateKey}
	refused("operator leaf signed by a cluster intermediate", forged, "unknown certificate authority")

	// An admin certificate that expired (issued by the same authority
	// with its clock ten hours back, for one hour).
	past := rs.open(func() time.Time { return time.Now().Add(-10 * time.Hour) })
	req, key = csr(t)
	old, err := past.IssueAdminCert(ca.WithActor(ctx, "test"), ca.AdminCertRequest{Name: "olga", Role: ca.RoleOperator, TTL: time.Hour, CSR: req.Raw})
	if err != nil {
		t.Fatal(err)
	}
	refused("expired admin certificate", tlsCert(t, ca.EncodeCerts(old.Chain), key), "expired certificate")

	// A revoked one: accepted, then refused from the next call on.
	rita, rec := rs.issue(t, "rita", "operator", time.Hour)
	conn := rs.remote(t, rita)
	if _, err := conn.ListClusters(ctx, &meshrootv1.ListClustersRequest{}); err != nil {
		t.Fatalf("rita before revocation: %v", err)
	}
	if _, err := rs.admin.RevokeAdminCert(ctx, &meshrootv1.RevokeAdminCertRequest{Serial: rec.GetSerial()}); err != nil {
		t.Fatal(err)
	}
	_, err = conn.ListClusters(ctx, &meshrootv1.ListClustersRequest{})
	wantCode(t, err, codes.Unauthenticated, "revoked")
	if actor, _, result := lastAuditActor(t, rs); !strings.HasPrefix(actor, "admin-cert:rita(") || result != "denied" {
		t.Errorf("refusal of the revoked certificate audited as %s %s; want admin-cert:rita(...) denied", actor, result)
	}
	list, err := rs.admin.ListAdminCerts(ctx, &meshrootv1.ListAdminCertsRequest{})
	if err != nil || len(list.GetCerts()) != 3 || list.GetCerts()[2].GetRevokedAt() == nil {
		t.Errorf("ListAdminCerts = %v, %v; want gina, olga and rita, rita revoked", list, err)
	}
}

// TestEveryAdminRPCIsAuthorized fails when an Admin rpc is missing from
// the remote admin authorization table (a new verb would be refused to
// everyone, or worse, be forgotten), or when a read rpc is not open to
// viewers or a change is.
func TestEveryAdminRPCIsAuthorized(t *testing.T) {
	desc := meshrootv1.Admin_ServiceDesc
	names := map[string]bool{}
	for _, m := range desc.Methods {
		names["/"+desc.ServiceName+"/"+m.MethodName] = true
	}
	for _, s := range desc.Streams {
		names["/"+desc.ServiceName+"/"+s.StreamName] = true
	}
	for name := range names {
		role, ok := server.AdminMethodRoles[name]
		if !ok {
			t.Errorf("%s is not in server.AdminMethodRoles: give it its minimum role", name)
			continue
		}
		verb := name[strings.LastIndex(name, "/")+1:]
		read := strings.HasPrefix(verb, "List") || strings.HasPrefix(verb, "Show") || strings.HasPrefix(verb, "Get") ||
			verb == "RotationStatus" || verb == "VerifyAudit"
		if want := map[bool]ca.AdminRole{true: ca.RoleViewer, false: ca.RoleOperator}[read]; role != want {
			t.Errorf("%s needs %s; a %s rpc should need %s", name, role, map[bool]string{true: "read", false: "changing"}[read], want)
		}
	}
	for name := range server.AdminMethodRoles {
		if !names[name] {
			t.Errorf("server.AdminMethodRoles lists %s, which is not an Admin rpc", name)
		}
	}
	if len(names) < 29 {
		t.Fatalf("only %d Admin rpcs found", len(names))
	}
}

// AuthorizeAdmin and AdminTLSConfig are what another listener guarded by
// admin mTLS (the fleet page) uses: a viewer certificate is accepted for
// viewer access and refused for operator access, with its actor.
func TestAuthorizeAdminForOtherListeners(t *testing.T) {
	rs := startRemoteAdmin(t)
	viewerCert, _ := rs.issue(t, "vera", "viewer", time.Hour)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", rs.srv.AdminTLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	states := make(chan tls.ConnectionState, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if tc.Handshake() == nil {
			states <- tc.ConnectionState()
		}
		close(states)
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return viewerCert, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	state, ok := <-states
	if !ok {
		t.Fatal("the server side of the handshake failed")
	}
	actor, err := rs.srv.AuthorizeAdmin(t.Context(), &state, ca.RoleViewer, "fleet page")
	if err != nil || actor != "admin-cert:vera(viewer)" {
		t.Errorf("AuthorizeAdmin(viewer) = %q, %v; want admin-cert:vera(viewer)", actor, err)
	}
	_, err = rs.srv.AuthorizeAdmin(t.Context(), &state, ca.RoleOperator, "fleet page")
	wantCode(t, err, codes.PermissionDenied, "may not call fleet page: it needs operator")
	_, err = rs.srv.AuthorizeAdmin(t.Context(), &tls.ConnectionState{}, ca.RoleViewer, "fleet page")
	wantCode(t, err, codes.Unauthenticated, "no verified admin client certificate")
}
