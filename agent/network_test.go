package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/kubeclient"
)

// stubIssuer is an Issuer whose watch stream sends the bundle once and
// then never again: only polling can notice a later change. It signs with
// a real ca.Authority; the cluster's Kubernetes is an output
// folder (what is tested here is the agent's connection, not the
// Secret write, which test/kube tests against a real kube-apiserver).
type stubIssuer struct {
	meshrootv1.UnimplementedIssuerServer
	auth *ca.Authority
	root *x509.Certificate

	mu     sync.Mutex
	bundle *meshrootv1.TrustBundle
	gets   atomic.Int64
	// signFail is how many SignIntermediate calls to fail (Unavailable)
	// before signing; signKeys records the public key of every CSR.
	signFail atomic.Int64
	signKeys [][]byte
}

func (s *stubIssuer) current() *meshrootv1.TrustBundle {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bundle
}

func (s *stubIssuer) GetTrustBundle(context.Context, *meshrootv1.GetTrustBundleRequest) (*meshrootv1.TrustBundle, error) {
	s.gets.Add(1)
	return s.current(), nil
}

func (s *stubIssuer) WatchTrustBundle(_ *meshrootv1.WatchTrustBundleRequest, stream meshrootv1.Issuer_WatchTrustBundleServer) error {
	if err := stream.Send(s.current()); err != nil {
		return err
	}
	<-stream.Context().Done() // never pushes a change
	return nil
}

func (s *stubIssuer) SignIntermediate(_ context.Context, req *meshrootv1.SignIntermediateRequest) (*meshrootv1.SignIntermediateResponse, error) {
	csr, err := x509.ParseCertificateRequest(req.GetCsr())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.signKeys = append(s.signKeys, csr.RawSubjectPublicKeyInfo)
	s.mu.Unlock()
	if s.signFail.Add(-1) >= 0 {
		return nil, status.Error(codes.Unavailable, "answer lost")
	}
	inter, err := s.auth.SignIntermediate(ca.IntermediateRequest{Cluster: req.GetCluster(), CSR: csr, TrustDomain: "example.org"})
	if err != nil {
		return nil, err
	}
	b := s.current()
	return &meshrootv1.SignIntermediateResponse{
		CertChain: [][]byte{inter.Raw, s.root.Raw}, TrustedRoots: b.GetRoots(), BundleSequence: b.GetSequence(), RootId: ca.RootID(s.root),
	}, nil
}

func (s *stubIssuer) ReportStatus(context.Context, *meshrootv1.ReportStatusRequest) (*meshrootv1.ReportStatusResponse, error) {
	return &meshrootv1.ReportStatusResponse{}, nil
}

// startStub serves a stubIssuer on 127.0.0.1 behind a certificate from a
// meshroot server CA; it returns the issuer, its address and the root's PEM.
func startStub(t *testing.T, refreshHint time.Duration, hang bool) (*stubIssuer, string, []byte) {
	t.Helper()
	a, root, _ := testRootAuthority(t)
	sKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sca, err := a.SignServerCA(sKey.Public(), "example.org", ca.ParseServerNames([]string{"localhost", "127.0.0.1"}), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := &stubIssuer{auth: a, root: root, bundle: &meshrootv1.TrustBundle{
		TrustDomain: "example.org", Roots: [][]byte{root.Raw}, Sequence: 1,
		RefreshHintSeconds: int64(refreshHint / time.Second), ActiveRootId: ca.RootID(root),
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{mintServerCert(t, sca, sKey, sca)}, MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert,
	})))
	if hang {
		meshrootv1.RegisterIssuerServer(srv, &hungIssuer{s})
	} else {
		meshrootv1.RegisterIssuerServer(srv, s)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return s, ln.Addr().String(), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})
}

// newTestAgent is an agent for cluster east against server, writing to an
// output folder.
func newTestAgent(t *testing.T, server string, rootPEM []byte) (*Agent, kubeclient.Interface) {
	t.Helper()
	kube, err := NewFolder(t.TempDir(), DefaultSecret)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{
		Server: server, ServerCA: rootPEM, Cluster: "east", JoinToken: "mrt.test", Kube: kube,
		Restart: RestartNever, MaxBackoff: 2 * time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a, kube
}

// secretRoots is how many roots root-cert.pem of the cacerts Secret holds.
func secretRoots(kube kubeclient.Interface) int {
	cur, err := ReadSecret(context.Background(), kube, DefaultSecret)
	if err != nil || cur.CACerts == nil {
		return 0
	}
	return len(cur.CACerts.Roots)
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAgentPollsAtRefreshHint: the watch stream stays open but never
// pushes; the trust bundle changes on the server; the agent finds the
// change by re-fetching at the bundle's refresh hint (2 s here) and writes
// the new roots. (Without the poll it would wait for a push that never
// comes, up to the next renewal.)
func TestAgentPollsAtRefreshHint(t *testing.T) {
	stub, addr, rootPEM := startStub(t, 2*time.Second, false)
	a, kube := newTestAgent(t, addr, rootPEM)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitFor(t, 15*time.Second, "first cacerts with one root", func() bool { return secretRoots(kube) == 1 })

	second := testCert(t)
	stub.mu.Lock()
	next := proto.Clone(stub.bundle).(*meshrootv1.TrustBundle)
	next.Roots = [][]byte{stub.root.Raw, second.Raw}
	next.Sequence = 2
	stub.bundle = next
	stub.mu.Unlock()
	gets := stub.gets.Load()
	waitFor(t, 15*time.Second, "cacerts holds both roots after the change, found by polling", func() bool { return secretRoots(kube) == 2 })
	if stub.gets.Load() == gets {
		t.Errorf("the agent made no GetTrustBundle call after the change, yet wrote it")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// blackhole accepts TCP connections and never reads or writes; it counts
// them and closes them at the end of the test.
func blackhole(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), &n
}

// TestAgentSilentServerDoesNotHang: a server address where something
// accepts TCP but never answers. A reconcile, which has no deadline of its
// own, returns an error within the connect bound (10 s, the default; gRPC's
// own default is 20 s), and the running agent keeps retrying with new
// connections.
func TestAgentSilentServerDoesNotHang(t *testing.T) {
	addr, accepted := blackhole(t)
	_, _, rootPEM := startStub(t, 0, false)
	a, _ := newTestAgent(t, addr, rootPEM)
	start := time.Now()
	_, err := a.Reconcile(context.Background())
	took := time.Since(start)
	if err == nil {
		t.Fatal("Reconcile against a silent server succeeded")
	}
	if bound := connectTimeout + 3*time.Second; took > bound {
		t.Fatalf("Reconcile against a silent server took %s (error %v), want under %s", took, err, bound)
	}
	t.Logf("reconcile gave up after %s: %v", took.Round(time.Millisecond), status.Convert(err).Message())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	before := accepted.Load()
	waitFor(t, 3*connectTimeout, "the running agent retries on a new connection", func() bool { return accepted.Load() >= before+2 })
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5 s of its context ending")
	}
}

// hungIssuer completes TLS and HTTP/2 but never answers GetTrustBundle.
type hungIssuer struct{ *stubIssuer }

func (h *hungIssuer) GetTrustBundle(ctx context.Context, _ *meshrootv1.GetTrustBundleRequest) (*meshrootv1.TrustBundle, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestAgentCallDeadline: a server that answers the handshakes but not the
// call. Each unary call is bounded by callTimeout (30 s; 2 s here, set by
// the test), so a call without a deadline of its own returns.
func TestAgentCallDeadline(t *testing.T) {
	old := callTimeout
	callTimeout = 2 * time.Second
	defer func() { callTimeout = old }()
	_, addr, rootPEM := startStub(t, 0, true)
	a, _ := newTestAgent(t, addr, rootPEM)
	start := time.Now()
	_, err := a.client.issuer.GetTrustBundle(context.Background(), &meshrootv1.GetTrustBundleRequest{Cluster: "east"})
	took := time.Since(start)
	if err == nil || took > callTimeout+2*time.Second {
		t.Fatalf("a call to a server that never answers: %v after %s, want an error within %s", err, took, callTimeout+2*time.Second)
	}
	if took < callTimeout-100*time.Millisecond {
		t.Fatalf("the call failed after %s (%v), before the deadline: the server did not hang as intended", took, err)
	}
}
