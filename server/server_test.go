package server_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/api/wire"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/disk"
	"github.com/meshroot/meshroot/server"
	"github.com/meshroot/meshroot/server/authn"
	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/sqlite"
)

// testServer is a real server on 127.0.0.1 over a real SQLite store.
type testServer struct {
	st     store.Store
	srv    *server.Server
	admin  meshrootv1.AdminClient
	socket string
	cancel context.CancelFunc
	done   chan error
}

func startServer(t *testing.T, opts ...func(*server.ServerConfig)) *testServer {
	t.Helper()
	return startServerWrapped(t, nil, opts...)
}

// startServerWrapped is startServer with the server's store (not ts.st)
// replaced by wrap(store), when wrap is not nil.
func startServerWrapped(t *testing.T, wrap func(store.Store) store.Store, opts ...func(*server.ServerConfig)) *testServer {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "meshroot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	served := st
	if wrap != nil {
		served = wrap(st)
	}
	km, err := disk.New(disk.Options{Dir: filepath.Join(dir, "keys"), InsecurePlaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := ca.NewService(served, km, ca.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{st: st, socket: filepath.Join(dir, "run", "admin.sock"), done: make(chan error, 1)}
	cfg := server.ServerConfig{
		Service: svc, Store: served, Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", AdminSocket: ts.socket,
		ServerNames: []string{"localhost", "127.0.0.1"}, BundlePoll: 100 * time.Millisecond,
		Log: slog.New(slog.DiscardHandler),
	}
	for _, o := range opts {
		o(&cfg)
	}
	ts.srv, err = server.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var runCtx context.Context
	runCtx, ts.cancel = context.WithCancel(ctx)
	go func() { ts.done <- ts.srv.Run(runCtx) }()
	t.Cleanup(ts.stop)
	conn, err := grpc.NewClient("unix://"+ts.socket, grpc.WithTransportCredentials(server.UnixPeerCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ts.admin = meshrootv1.NewAdminClient(conn)
	return ts
}

func (ts *testServer) stop() {
	if ts.cancel != nil {
		ts.cancel()
		<-ts.done
		ts.cancel = nil
	}
}

// bootstrap creates a root and clusters east and west through the admin
// socket and waits until the server is ready.
func (ts *testServer) bootstrap(t *testing.T) []*x509.Certificate {
	t.Helper()
	ctx := t.Context()
	root, err := ts.admin.InitRoot(ctx, &meshrootv1.InitRootRequest{TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"east", "west"} {
		if _, err := ts.admin.AddCluster(ctx, &meshrootv1.AddClusterRequest{Name: c}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-ts.srv.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("server not ready 10 s after root init")
	}
	rc, err := x509.ParseCertificate(root.GetChain()[len(root.GetChain())-1])
	if err != nil {
		t.Fatal(err)
	}
	return []*x509.Certificate{rc}
}

func (ts *testServer) token(t *testing.T, cluster string) string {
	t.Helper()
	resp, err := ts.admin.CreateToken(t.Context(), &meshrootv1.CreateTokenRequest{Cluster: cluster, TtlSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetToken()
}

// issuerClient dials the Issuer API trusting roots, presenting cert (if any).
func (ts *testServer) issuerClient(t *testing.T, roots []*x509.Certificate, cert *tls.Certificate) meshrootv1.IssuerClient {
	t.Helper()
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(ts.srv.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return meshrootv1.NewIssuerClient(conn)
}

func csr(t *testing.T) (*x509.CertificateRequest, *tls.Certificate) {
	t.Helper()
	key, _ := keys.ECP256.Generate()
	der, err := x509.CreateCertificateRequest(nil, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificateRequest(der)
	return c, &tls.Certificate{PrivateKey: key}
}

func withJoinToken(ctx context.Context, tok string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, server.MetadataJoinToken, tok)
}

func wantCode(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msg) {
		t.Fatalf("got %v, want %s containing %q", err, code, msg)
	}
}

func TestSignIntermediateWithJoinTokenThenRenewal(t *testing.T) {
	ts := startServer(t)
	roots := ts.bootstrap(t)
	ctx := t.Context()
	c := ts.issuerClient(t, roots, nil)
	tok := ts.token(t, "east")

	req, key := csr(t)
	resp, err := c.SignIntermediate(withJoinToken(ctx, tok), &meshrootv1.SignIntermediateRequest{Cluster: "east", Csr: req.Raw})
	if err != nil {
		t.Fatal(err)
	}
	issued, err := wire.IssuedFromProto(resp, "example.org")
	if err != nil {
		t.Fatal(err)
	}
	if err := issued.CACerts(key.PrivateKey.(crypto.Signer)).Verify(time.Now()); err != nil {
		t.Fatalf("issued cacerts do not verify: %v", err)
	}
	if resp.GetSerial() != ca.SerialHex(issued.Cert.SerialNumber) || resp.GetBundleSequence() != 1 {
		t.Errorf("response serial %s / seq %d", resp.GetSerial(), resp.GetBundleSequence())
	}

	// The join token is single-use.
	req2, _ := csr(t)
	_, err = c.SignIntermediate(withJoinToken(ctx, tok), &meshrootv1.SignIntermediateRequest{Cluster: "east", Csr: req2.Raw})
	wantCode(t, err, codes.Unauthenticated, "already used")

	// Renewal: present the issued intermediate as client certificate.
	renew := &tls.Certificate{PrivateKey: key.PrivateKey, Leaf: issued.Cert}
	for _, cc := range issued.Chain {
		renew.Certificate = append(renew.Certificate, cc.Raw)
	}
	rc := ts.issuerClient(t, roots, renew)
	resp2, err := rc.SignIntermediate(ctx, &meshrootv1.SignIntermediateRequest{Cluster: "east", Csr: req2.Raw})
	if err != nil {
		t.Fatalf("renewal with the current intermediate: %v", err)
	}
	if resp2.GetSerial() == resp.GetSerial() {
		t.Error("renewal returned the same serial")
	}
	// The same intermediate never yields another cluster's.
	_, err = rc.SignIntermediate(ctx, &meshrootv1.SignIntermediateRequest{Cluster: "west", Csr: req2.Raw})
	wantCode(t, err, codes.PermissionDenied, "")

	// After revocation, the intermediate no longer renews.
	if _, err := ts.admin.RevokeIntermediate(ctx, &meshrootv1.RevokeIntermediateRequest{Serial: resp.GetSerial(), Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	rc2 := ts.issuerClient(t, roots, renew)
	_, err = rc2.SignIntermediate(ctx, &meshrootv1.SignIntermediateRequest{Cluster: "east", Csr: req2.Raw})
	wantCode(t, err, codes.Unauthenticated, "revoked")
}

func TestSignIntermediateRefusals(t *testing.T) {
	ts := startServer(t)
	roots := ts.bootstrap(t)
	ctx := t.Context()
	c := ts.issuerClient(t, roots, nil)
	req, _ := csr(t)
	var tokens []string
	token := func(cluster string) string {
		tok := ts.token(t, cluster)
		tokens = append(tokens, tok)
		return tok
	}

	_, err := c.SignIntermediate(ctx, &meshrootv1.SignIntermediateRequest{Cluster: "east", Csr: req.Raw})
	wantCode(t, err, codes.Unauthenticated, "no credential")

	_, err = c.SignIntermediate(withJoinToken(ctx, token("east")), &meshrootv1.SignIntermediateRequest{Cluster: "west", Csr: req.Raw})
	wantCode(t, err, codes.PermissionDenied, "east")

	_, err = c.SignIntermediate(withJoinToken(ctx, "mrt.0123456789abcdef.AAAA"), &meshrootv1.SignIntermediateRequest{Cluster: "east", Csr: req.Raw})
	wantCode(t, err, codes.Unauthenticated, "")

	_, err = c.SignIntermediate(withJoinToken(ctx, token("east")), &meshrootv1.SignIntermediateRequest{Cluster: "east", Csr: []byte("garbage")})
	wantCode(t, err, codes.InvalidArgument, "CSR")

	_, err = c.SignIntermediate(ctx, &meshrootv1.SignIntermediateRequest{Cluster: "Bad_Name", Csr: req.Raw})
	wantCode(t, err, codes.InvalidArgument, "cluster name")

	_, err = c.SignIntermediate(withJoinToken(ctx, token("east")), &meshrootv1.SignIntermediateRequest{Cluster: "nowhere", Csr: req.Raw})
	wantCode(t, err, codes.PermissionDenied, "not registered")

	// An oversized request is cut off by the transport.
	_, err = c.SignIntermediate(ctx, &meshrootv1.SignIntermediateRequest{Cluster: "east", Csr: make([]byte, 1<<20)})
	wantCode(t, err, codes.ResourceExhausted, "")

	// Every refusal that reached the server is in the audit log, with a reason.
	audit, err := ts.admin.ListAudit(ctx, &meshrootv1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var denied int
	for _, e := range audit.GetEntries() {
		if e.GetAction() == "intermediate.issue" && e.GetResult() == "denied" {
			denied++
			if !strings.Contains(e.GetDetails(), "reason") {
				t.Errorf("denied entry without a reason: %s", e.GetDetails())
			}
			for _, tok := range tokens {
				_, secret, _ := strings.Cut(tok[4:], ".")
				if strings.Contains(e.GetDetails(), secret) || strings.Contains(e.GetActor(), secret) {
					t.Errorf("audit entry %d holds a join token secret", e.GetSeq())
				}
			}
		}
	}
	if denied != 6 {
		t.Errorf("%d denied issuance entries, want 6", denied)
	}
	if _, err := ts.admin.VerifyAudit(ctx, &meshrootv1.VerifyAuditRequest{}); err != nil {
		t.Errorf("audit chain: %v", err)
	}
}

// TestReadyzAndFirstBundle: not ready before a root exists; once it does, a
// watch starts with the current bundle and /readyz answers 200.
func TestReadyzAndFirstBundle(t *testing.T) {
	ts := startServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	// Before a root exists the server is not ready, and says why.
	resp, err := http.Get("http://" + ts.srv.HTTPAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz before root init: %d, want 503", resp.StatusCode)
	}
	roots := ts.bootstrap(t)
	c := ts.issuerClient(t, roots, nil)
	stream, err := c.WatchTrustBundle(ctx, &meshrootv1.WatchTrustBundleRequest{Cluster: "east"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if first.GetSequence() != 1 || len(first.GetRoots()) != 1 || first.GetTrustDomain() != "example.org" || first.GetActiveRootId() == "" {
		t.Fatalf("first bundle: seq %d roots %d td %q active %q", first.GetSequence(), len(first.GetRoots()), first.GetTrustDomain(), first.GetActiveRootId())
	}
	resp, err = http.Get("http://" + ts.srv.HTTPAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz after root init: %d", resp.StatusCode)
	}
}

func TestGracefulStop(t *testing.T) {
	ts := startServer(t)
	roots := ts.bootstrap(t)
	c := ts.issuerClient(t, roots, nil)
	stream, err := c.WatchTrustBundle(t.Context(), &meshrootv1.WatchTrustBundleRequest{Cluster: "east"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ts.stop()
	if d := time.Since(start); d > 9*time.Second {
		t.Errorf("stop took %s with a watcher connected", d)
	}
	if _, err := stream.Recv(); err == nil {
		t.Error("watch stream still open after stop")
	}
	if _, err := ts.admin.ListRoots(t.Context(), &meshrootv1.ListRootsRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("admin socket after stop: %v, want Unavailable", err)
	}
}

// TestWatchCatchesUpWithAgent: two replicas over one store, the second
// polling it rarely. A bundle change made through the first is not yet in
// the second's hub; an agent that heard of it from the first and resumes
// its watch on the second (saying which sequence it holds) gets that
// sequence, not the older bundle the second still holds.
func TestWatchCatchesUpWithAgent(t *testing.T) {
	var svc *ca.Service
	var st authn.Store
	a := startServer(t, func(c *server.ServerConfig) { svc, st = c.Service, c.Store })
	roots := a.bootstrap(t)
	b := startServer(t, func(c *server.ServerConfig) { c.Service, c.Store, c.BundlePoll = svc, st, time.Hour })
	select {
	case <-b.srv.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("second replica not ready")
	}
	if _, err := a.admin.PrepareRoot(t.Context(), &meshrootv1.PrepareRootRequest{}); err != nil {
		t.Fatal(err)
	}
	ia := a.issuerClient(t, roots, nil)
	first := func(c meshrootv1.IssuerClient, have uint64) *meshrootv1.TrustBundle {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		stream, err := c.WatchTrustBundle(ctx, &meshrootv1.WatchTrustBundleRequest{Cluster: "east", HaveSequence: have})
		if err != nil {
			t.Fatal(err)
		}
		msg, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	onA := first(ia, 2) // the store holds 2 once PrepareRoot returned
	if onA.GetSequence() != 2 || len(onA.GetRoots()) != 2 {
		t.Fatalf("replica that made the change: sequence %d, %d roots; want 2, 2", onA.GetSequence(), len(onA.GetRoots()))
	}
	cb := b.issuerClient(t, roots, nil)
	// The precondition: the second replica's hub is behind.
	if stale := first(cb, 0); stale.GetSequence() != 1 {
		t.Fatalf("second replica without a held sequence sent %d: the test needs its hub to be behind (1)", stale.GetSequence())
	}
	if got := first(cb, onA.GetSequence()); got.GetSequence() != 2 || len(got.GetRoots()) != 2 {
		t.Fatalf("resumed watch on the second replica: sequence %d, %d roots; want 2, 2", got.GetSequence(), len(got.GetRoots()))
	}
}
