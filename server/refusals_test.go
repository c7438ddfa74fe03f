package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/server"
)

// deniedIssues returns the denied intermediate.issue rows of the log.
func (ts *testServer) deniedIssues(t *testing.T) []string {
	t.Helper()
	entries, err := ts.st.ListAudit(context.Background(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.Action == "intermediate.issue" && e.Result == "denied" {
			out = append(out, e.Details)
		}
	}
	return out
}

// TestRefusalsAreSummarisedPerPeer: with the rate limit off, 200 refusals
// of one kind from one peer are audited as the first RefusalRows rows plus
// one summary row with the count of the rest.
func TestRefusalsAreSummarisedPerPeer(t *testing.T) {
	ts := startServer(t, func(c *server.ServerConfig) {
		c.Limits = server.Limits{RefusalBurst: -1, RefusalRows: 3, RefusalWindow: time.Hour}
	})
	roots := ts.bootstrap(t)
	c := ts.issuerClient(t, roots, nil)
	req, _ := csr(t)
	for range 200 {
		_, err := c.SignIntermediate(t.Context(), &meshrootv1.SignIntermediateRequest{Cluster: "nowhere", Csr: req.Raw})
		wantCode(t, err, codes.PermissionDenied, "not registered")
	}
	if got := ts.deniedIssues(t); len(got) != 3 {
		t.Fatalf("%d denied rows during the window, want 3: %q", len(got), got)
	}
	ts.stop() // ends the window
	got := ts.deniedIssues(t)
	if len(got) != 4 || !strings.Contains(got[3], "peer 127.0.0.1: 197 more refusals (code PermissionDenied)") {
		t.Fatalf("denied rows after the window: %q, want 3 and a summary of 197", got)
	}
}

// TestRefusalRateLimitPerPeer: a peer that used up its refusals is refused
// at once (before authentication), while another peer is not, and the
// trust bundle stays readable.
func TestRefusalRateLimitPerPeer(t *testing.T) {
	ts := startServer(t, func(c *server.ServerConfig) {
		c.Limits = server.Limits{RefusalBurst: 3, RefusalRate: 0.001}
	})
	roots := ts.bootstrap(t)
	ctx := t.Context()
	c := ts.issuerClient(t, roots, nil)
	req, _ := csr(t)
	for range 3 {
		_, err := c.SignIntermediate(ctx, &meshrootv1.SignIntermediateRequest{Cluster: "east", Csr: req.Raw})
		wantCode(t, err, codes.Unauthenticated, "no credential")
	}
	// Even a good join token is refused now: the peer is limited.
	tok := ts.token(t, "east")
	_, err := c.SignIntermediate(withJoinToken(ctx, tok), &meshrootv1.SignIntermediateRequest{Cluster: "east", Csr: req.Raw})
	wantCode(t, err, codes.ResourceExhausted, "too many refused requests from 127.0.0.1")
	if _, err := c.GetTrustBundle(ctx, &meshrootv1.GetTrustBundleRequest{}); err != nil {
		t.Errorf("trust bundle while limited: %v", err)
	}
	// Another peer (127.0.0.2) has its own allowance.
	other := dialFrom(t, ts, roots, "127.0.0.2")
	if _, err := other.SignIntermediate(withJoinToken(ctx, tok), &meshrootv1.SignIntermediateRequest{Cluster: "east", Csr: req.Raw}); err != nil {
		t.Errorf("another peer with a good token: %v", err)
	}
}

func dialFrom(t *testing.T, ts *testServer, roots []*x509.Certificate, ip string) meshrootv1.IssuerClient {
	t.Helper()
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	conn, err := grpc.NewClient(ts.srv.Addr(),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return meshrootv1.NewIssuerClient(conn)
}

// TestConnectionLimit: with MaxConnections 2, two idle connections make a
// third wait until one closes.
func TestConnectionLimit(t *testing.T) {
	ts := startServer(t, func(c *server.ServerConfig) { c.Limits = server.Limits{MaxConnections: 2} })
	roots := ts.bootstrap(t)
	var idle []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", ts.srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	time.Sleep(200 * time.Millisecond) // let the server accept them
	c := ts.issuerClient(t, roots, nil)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	_, err := c.GetTrustBundle(ctx, &meshrootv1.GetTrustBundleRequest{}, grpc.WaitForReady(true))
	cancel()
	if err == nil {
		t.Fatal("a third connection was served while two were open")
	}
	idle[0].Close()
	ctx, cancel = context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	if _, err := c.GetTrustBundle(ctx, &meshrootv1.GetTrustBundleRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Errorf("after one connection closed: %v", err)
	}
}

// TestRefusalsForRegisteredClustersKeptApart: refusals for different
// registered clusters from one peer are rows of their own (each a signal
// about a real cluster), while names that are not registered, a flood's
// junk, share one allowance and one summary per peer.
func TestRefusalsForRegisteredClustersKeptApart(t *testing.T) {
	ts := startServer(t, func(c *server.ServerConfig) {
		c.Limits = server.Limits{RefusalBurst: -1, RefusalRows: 1, RefusalWindow: time.Hour}
	})
	roots := ts.bootstrap(t) // registers east and west
	c := ts.issuerClient(t, roots, nil)
	req, _ := csr(t)
	for _, cluster := range []string{"east", "west", "nowhere", "elsewhere"} {
		for range 3 {
			if _, err := c.SignIntermediate(t.Context(), &meshrootv1.SignIntermediateRequest{Cluster: cluster, Csr: req.Raw}); err == nil {
				t.Fatalf("%s: issued without a credential", cluster)
			}
		}
	}
	during := ts.deniedIssues(t)
	if len(during) != 3 {
		t.Fatalf("%d denied rows during the window, want 3 (east, west, one for the unregistered names): %q", len(during), during)
	}
	ts.stop()
	after := ts.deniedIssues(t)
	var summaries []string
	for _, d := range after[3:] {
		summaries = append(summaries, d)
	}
	joined := strings.Join(summaries, "\n")
	if len(summaries) != 3 || !strings.Contains(joined, "2 more refusals") || !strings.Contains(joined, "5 more refusals") {
		t.Fatalf("summaries after the window: %q, want east's and west's 2 more each and the unregistered names' 5 more", summaries)
	}
}
