package spiffe

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
)

func TestMarshalBundleRoundTrip(t *testing.T) {
	var roots []*x509.Certificate
	for range 2 {
		k, _ := keys.ECP256.Generate()
		r, err := ca.NewRoot(k, ca.RootOptions{TrustDomain: "example.org"})
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, r)
	}
	doc, err := MarshalBundle(ca.TrustBundle{TrustDomain: "example.org", Roots: roots, Sequence: 7, RefreshHint: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	b, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString("example.org"), doc)
	if err != nil {
		t.Fatal(err)
	}
	if seq, ok := b.SequenceNumber(); !ok || seq != 7 {
		t.Errorf("sequence %d (%v), want 7", seq, ok)
	}
	if hint, ok := b.RefreshHint(); !ok || hint != 5*time.Minute {
		t.Errorf("refresh hint %s (%v), want 5m", hint, ok)
	}
	got := b.X509Authorities()
	if len(got) != 2 || !got[0].Equal(roots[0]) || !got[1].Equal(roots[1]) {
		t.Errorf("authorities not kept in order")
	}
}

func TestMarshalBundleRefusesBadTrustDomain(t *testing.T) {
	if _, err := MarshalBundle(ca.TrustBundle{TrustDomain: "Bad Domain"}); err == nil {
		t.Fatal("bundle for an invalid trust domain was produced")
	}
}
