package spiffe

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshroot/meshroot/ca"
)

func TestSVIDSource(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc, _ := newService(t, "example.org")
	src := NewSVIDSource(svc, "example.org", 2*time.Second, quietLog(t))
	start := time.Now()
	cert, err := src.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	want := "spiffe://example.org/meshroot/bundle-endpoint"
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want || len(leaf.DNSNames) != 0 || len(leaf.IPAddresses) != 0 || len(leaf.EmailAddresses) != 0 {
		t.Fatalf("SANs: URIs %v DNS %v IPs %v, want only the URI %s", leaf.URIs, leaf.DNSNames, leaf.IPAddresses, want)
	}
	if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Fatalf("key %T, want P-256", leaf.PublicKey)
	}
	if leaf.IsCA {
		t.Fatal("SVID is a CA")
	}
	if got := leaf.NotAfter.Sub(time.Now()); got > 3*time.Second {
		t.Fatalf("SVID lives %s, want the 2s TTL", got)
	}
	// It verifies as an X.509-SVID against the trust bundle.
	tb, err := svc.TrustBundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	var raw [][]byte
	raw = append(raw, cert.Certificate...)
	id, _, err := x509svid.ParseAndVerify(raw, x509bundle.FromX509Authorities(td, tb.Roots))
	if err != nil || id.String() != want {
		t.Fatalf("SVID does not verify: %v (%s)", err, id)
	}
	if id2, err := src.ID(); err != nil || id2.String() != want {
		t.Fatalf("ID() = %s, %v", id2, err)
	}
	// The same SVID is served until it is renewed.
	again, _ := src.GetCertificate(nil)
	if again != cert {
		t.Fatal("GetCertificate issued a new SVID while the old one is fresh")
	}

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- src.Run(runCtx) }()
	// Renewed at half its lifetime: about 1 s after issuance.
	waitFor(t, 4*time.Second, "renewal at half-life", func() bool { return src.current().SerialNumber.Cmp(leaf.SerialNumber) != 0 })
	renewed := src.current()
	if half := start.Add(leaf.NotAfter.Sub(start) / 2); time.Now().Before(half.Add(-50 * time.Millisecond)) {
		t.Fatalf("renewed %s before half its lifetime", time.Until(half))
	}
	// Reissue on demand.
	src.Reissue()
	waitFor(t, 2*time.Second, "reissue", func() bool { return src.current().SerialNumber.Cmp(renewed.SerialNumber) != 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestSVIDSourceChainBelowRoot(t *testing.T) {
	t.Parallel()
	// A source for a trust domain the active root is not of is refused.
	svc, _ := newService(t, "example.org")
	if _, err := NewSVIDSource(svc, "other.org", 0, quietLog(t)).GetCertificate(nil); err == nil {
		t.Fatal("an SVID for another trust domain than the root's was issued")
	}
	if _, err := NewSVIDSource(svc, "Bad Domain", 0, quietLog(t)).GetCertificate(nil); err == nil {
		t.Fatal("an SVID for an invalid trust domain was issued")
	}
	cert, err := NewSVIDSource(svc, "example.org", 0, quietLog(t)).GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	// A root that signs itself: the chain is the leaf and the server CA
	// (the root is in the bundle, never sent).
	if len(cert.Certificate) != 2 || !isServerCA(t, cert.Certificate[1]) {
		t.Fatalf("chain of %d certificates, want the leaf and the server CA", len(cert.Certificate))
	}
	if d := time.Until(cert.Leaf.NotAfter); d < 59*time.Minute || d > 61*time.Minute {
		t.Fatalf("default TTL gives %s, want 1h", d)
	}

	// An imported intermediate under an offline root: leaf, server CA,
	// intermediate.
	offline := newCA(t, "")
	inter := offline.Intermediate(t)
	svc2, _ := newBareService(t)
	if _, err := svc2.ImportRoot(ca.WithActor(context.Background(), "test"), ca.ImportRootRequest{
		TrustDomain: "example.org", ChainPEM: ca.EncodeCerts([]*x509.Certificate{inter.Cert, offline.Cert}), Key: inter.Key,
	}); err != nil {
		t.Fatal(err)
	}
	cert, err = NewSVIDSource(svc2, "example.org", 0, quietLog(t)).GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.Certificate) != 3 || !isServerCA(t, cert.Certificate[1]) || string(cert.Certificate[2]) != string(inter.Cert.Raw) {
		t.Fatalf("chain of %d certificates, want leaf + server CA + intermediate", len(cert.Certificate))
	}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	if _, _, err := x509svid.ParseAndVerify(cert.Certificate, x509bundle.FromX509Authorities(td, []*x509.Certificate{offline.Cert})); err != nil {
		t.Fatalf("SVID under an intermediate does not verify against the offline root: %v", err)
	}
}

func isServerCA(t *testing.T, der []byte) bool {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return ca.IsServerCA(c)
}
