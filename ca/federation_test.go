package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// spiffeCAPEM is a self-signed CA certificate carrying spiffe://td, as
// SPIRE's CA certificates do, PEM-encoded.
func spiffeCAPEM(t *testing.T, td string) []byte {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: td + " CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{{Scheme: "spiffe", Host: td}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func webPeer(td string) ca.AddFederationRequest {
	return ca.AddFederationRequest{TrustDomain: td, URL: "https://bundles." + td + "/", Profile: store.ProfileHTTPSWeb}
}

// TestFederationPeerBeforeInitCannotBecomeOwnTrustDomain: a peer added
// before `root init` may name the trust domain the root is then created
// for; the peer would supply roots for our own trust domain. Creating the
// root refuses while such a peer exists, and after init the peer cannot be
// added either.
func TestFederationPeerBeforeInitCannotBecomeOwnTrustDomain(t *testing.T) {
	ctx := context.Background()
	svc, st := newService(t)
	if _, err := svc.AddFederation(ca.WithActor(ctx, actor), webPeer("example.org")); err != nil {
		t.Fatalf("a peer before init (our trust domain is not known yet) was refused: %v", err)
	}
	_, err := svc.InitRoot(ca.WithActor(ctx, actor), ca.InitRootRequest{TrustDomain: "example.org"})
	var pe *ca.PolicyError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "federation peer for example.org") {
		t.Fatalf("root init for the trust domain of a federation peer: %v, want a refusal naming the peer", err)
	}
	if roots, _ := st.ListRoots(ctx); len(roots) != 0 {
		t.Fatalf("refused init left %d roots", len(roots))
	}
	if td, _ := st.Meta(ctx, ca.MetaTrustDomain); td != "" {
		t.Fatalf("refused init set the trust domain to %q", td)
	}
	if err := svc.RemoveFederation(ca.WithActor(ctx, actor), "example.org"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.InitRoot(ca.WithActor(ctx, actor), ca.InitRootRequest{TrustDomain: "example.org"}); err != nil {
		t.Fatalf("init after the peer was removed: %v", err)
	}
	if _, err := svc.AddFederation(ca.WithActor(ctx, actor), webPeer("example.org")); !errors.As(err, &pe) {
		t.Fatalf("peer for our own trust domain after init: %v, want a refusal", err)
	}
	if _, err := svc.AddFederation(ca.WithActor(ctx, actor), webPeer("other.org")); err != nil {
		t.Fatalf("a foreign peer: %v", err)
	}
}

// TestFederationBootstrapBundleTrustDomain: a bootstrap bundle gets the
// trust-domain checks a fetched bundle gets, as PEM and as a document.
func TestFederationBootstrapBundleTrustDomain(t *testing.T) {
	ctx := context.Background()
	svc, st := newService(t)
	if _, err := svc.InitRoot(ca.WithActor(ctx, actor), ca.InitRootRequest{TrustDomain: "example.org"}); err != nil {
		t.Fatal(err)
	}
	spiffePeer := func(td string, bootstrap []byte) ca.AddFederationRequest {
		return ca.AddFederationRequest{
			TrustDomain: td, URL: "https://spire." + td + "/", Profile: store.ProfileHTTPSSPIFFE,
			EndpointSPIFFEID: "spiffe://" + td + "/spire/server", BootstrapBundle: bootstrap,
		}
	}
	var pe *ca.PolicyError
	evil := spiffeCAPEM(t, "evil.org")
	for name, data := range map[string][]byte{
		"PEM of evil.org":               evil,
		"PEM of other.org and evil.org": append(spiffeCAPEM(t, "other.org"), evil...),
		"PEM of our own trust domain":   spiffeCAPEM(t, "example.org"),
	} {
		_, err := svc.AddFederation(ca.WithActor(ctx, actor), spiffePeer("other.org", data))
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), "trust domain") {
			t.Errorf("%s as other.org's bootstrap bundle: %v, want a trust-domain refusal", name, err)
		}
	}
	if _, err := st.GetFederationPeer(ctx, "other.org"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused peer was stored: %v", err)
	}
	p, err := svc.AddFederation(ca.WithActor(ctx, actor), spiffePeer("other.org", spiffeCAPEM(t, "other.org")))
	if err != nil {
		t.Fatalf("a good PEM bootstrap bundle: %v", err)
	}
	if !strings.HasPrefix(strings.TrimSpace(string(p.Bundle)), "{") {
		t.Errorf("stored bootstrap bundle is not a SPIFFE bundle document: %.80q", p.Bundle)
	}
}
