package ca_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
)

// fakeUpstream is an in-memory CA with an issuer under a root, standing in
// for an upstream's answers (the real ones are tested in upstream/...).
type fakeUpstream struct {
	root, issuer *x509.Certificate
	issuerKey    crypto.Signer
	// writeConstraint makes SignConstrainedIntermediate write the name
	// constraint (false: it answers without it).
	writeConstraint bool
}

func newFakeUpstream(t *testing.T, rootPathLen int) *fakeUpstream {
	t.Helper()
	rootKey, _ := keys.ECP256.Generate()
	issKey, _ := keys.ECP256.Generate()
	f := &fakeUpstream{issuerKey: issKey}
	f.root = fakeCA(t, nil, rootKey, rootKey.Public(), "fake root", rootPathLen, nil)
	f.issuer = fakeCA(t, f.root, rootKey, issKey.Public(), "fake issuer", 1, nil)
	return f
}

func fakeCA(t *testing.T, parent *x509.Certificate, parentKey crypto.Signer, pub crypto.PublicKey, cn string, pathLen int, td *string) *x509.Certificate {
	t.Helper()
	c, err := makeCA(parent, parentKey, pub, cn, pathLen, td)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// makeCA signs a CA certificate (pathLen -1: unlimited), constrained to
// trust domain td when td is set.
func makeCA(parent *x509.Certificate, parentKey crypto.Signer, pub crypto.PublicKey, cn string, pathLen int, td *string) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * 365 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: pathLen, MaxPathLenZero: pathLen == 0,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if td != nil {
		tmpl.PermittedURIDomains, tmpl.ExcludedURIDomains, tmpl.PermittedDNSDomainsCritical = []string{*td}, []string{"." + *td}, true
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(nil, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func (f *fakeUpstream) Chain(context.Context) ([]*x509.Certificate, error) {
	return []*x509.Certificate{f.issuer, f.root}, nil
}

func (f *fakeUpstream) sign(csr *x509.CertificateRequest, cluster string, td *string) ([]*x509.Certificate, error) {
	c, err := makeCA(f.issuer, f.issuerKey, csr.PublicKey, cluster, 0, td)
	if err != nil {
		return nil, err
	}
	return []*x509.Certificate{c, f.issuer, f.root}, nil
}

func (f *fakeUpstream) SignIntermediate(_ context.Context, csr *x509.CertificateRequest, cluster string, _ time.Duration) ([]*x509.Certificate, error) {
	return f.sign(csr, cluster, nil)
}

// SignServerCA is not used by these tests (server CAs under an upstream
// are tested in upstream/...): it refuses.
func (f *fakeUpstream) SignServerCA(context.Context, *x509.CertificateRequest, time.Duration) ([]*x509.Certificate, error) {
	return nil, errors.New("fakeUpstream signs no server CA")
}

// constrainingFake adds SignConstrainedIntermediate.
type constrainingFake struct{ *fakeUpstream }

func (f constrainingFake) SignConstrainedIntermediate(_ context.Context, csr *x509.CertificateRequest, cluster, td string, _ time.Duration) ([]*x509.Certificate, error) {
	if !f.writeConstraint {
		return f.sign(csr, cluster, nil)
	}
	return f.sign(csr, cluster, &td)
}

func upstreamService(t *testing.T, up ca.Upstream) (*ca.Service, error) {
	t.Helper()
	svc, _ := newService(t)
	svc.SetUpstreams(func(context.Context, string) (ca.Upstream, error) { return up, nil })
	ctx := ca.WithActor(context.Background(), actor)
	_, err := svc.InitUpstreamRoot(ctx, "example.org", "step-ca://127.0.0.1:9000?provisioner=p&fingerprint=00")
	if err == nil {
		_, err = svc.AddCluster(ctx, ca.AddClusterRequest{Name: "east"})
	}
	return svc, err
}

// TestUpstreamChainNeedsPathLenRoom: a root with path length 1 over an
// issuing intermediate (what `step ca init` makes) leaves no room for
// cluster intermediates, which would then fail every verifier.
func TestUpstreamChainNeedsPathLenRoom(t *testing.T) {
	for _, tc := range []struct {
		rootPathLen int
		ok          bool
	}{{1, false}, {2, true}, {-1, true}} {
		_, err := upstreamService(t, newFakeUpstream(t, tc.rootPathLen))
		if tc.ok && err != nil {
			t.Errorf("root path length %d: %v", tc.rootPathLen, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "path length 1")) {
			t.Errorf("root path length %d: want a refusal naming the path length, got %v", tc.rootPathLen, err)
		}
	}
}

// TestUpstreamTrustDomainConstraint: the constraint is asked of upstreams
// that can write it, checked in their answer, and refused for the others.
func TestUpstreamTrustDomainConstraint(t *testing.T) {
	ctx := ca.WithActor(context.Background(), actor)
	issue := func(up ca.Upstream) (ca.Issued, error) {
		svc, err := upstreamService(t, up)
		if err != nil {
			t.Fatal(err)
		}
		csr, _ := csrFor(t)
		return svc.IssueIntermediate(ctx, ca.IssueRequest{Cluster: "east", CSR: csr, TrustDomainConstraint: true})
	}
	f := newFakeUpstream(t, -1)
	f.writeConstraint = true
	got, err := issue(constrainingFake{f})
	if err != nil {
		t.Fatal(err)
	}
	if got.Cert.PermittedURIDomains[0] != "example.org" {
		t.Errorf("permitted URI domains %v", got.Cert.PermittedURIDomains)
	}

	g := newFakeUpstream(t, -1)
	if _, err := issue(constrainingFake{g}); err == nil || !strings.Contains(err.Error(), "without the trust-domain name constraint") {
		t.Errorf("an answer without the constraint asked for: want a refusal, got %v", err)
	}
	if _, err := issue(newFakeUpstream(t, -1)); err == nil || !strings.Contains(err.Error(), "not available") {
		t.Errorf("an upstream that cannot constrain: want a refusal, got %v", err)
	}
}
