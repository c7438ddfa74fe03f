package federation

import (
	"context"
	"github.com/meshroot/meshroot/internal/testca"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/federation/bundle"
	"github.com/meshroot/meshroot/store"
)

func withheld(td, reason string) float64 {
	return testutil.ToFloat64(withheldGauge.WithLabelValues(td, reason))
}

// setOwnTrustDomain records td as this trust domain, as root init does.
func setOwnTrustDomain(t *testing.T, st store.Store, td string) {
	t.Helper()
	if err := st.Update(context.Background(), func(tx store.Tx) error {
		return tx.SetMeta(context.Background(), ca.MetaTrustDomain, td)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestHeldWithholdsOwnTrustDomain: a peer that names our own trust domain
// (added before the trust domain was known, by an older meshroot, or
// behind the store's back) never reaches the meshes, while the other
// peers do.
func TestHeldWithholdsOwnTrustDomain(t *testing.T) {
	st := newStore(t)
	addPeer(t, st, store.FederationPeer{TrustDomain: "mine.org", URL: "https://127.0.0.1:1/", Bundle: bundleDoc(t, "mine.org", 7, 0, newCA(t, "mine.org"))})
	addPeer(t, st, store.FederationPeer{TrustDomain: "other.org", URL: "https://127.0.0.1:1/", Bundle: bundleDoc(t, "other.org", 3, 0, newCA(t, "other.org"))})
	h := NewHeld(st, quietLog(t))
	ctx := context.Background()

	got, err := h.Bundles(ctx, "mine.org")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].TrustDomain != "other.org" || got[0].Sequence != 3 || len(got[0].Roots) != 1 {
		t.Fatalf("delivered %+v, want other.org only", got)
	}
	if withheld("mine.org", bundle.ReasonOwnTrustDomain) != 1 {
		t.Error("meshroot_federation_withheld{trust_domain=mine.org,reason=own_trust_domain} is not 1")
	}
	// While our trust domain is not known, nothing is delivered.
	if got, err := h.Bundles(ctx, ""); err != nil || len(got) != 0 {
		t.Fatalf("delivered %d bundles before the trust domain is known (%v), want none", len(got), err)
	}
	// Parsed once per stored version: the same certificates again.
	again, _ := h.Bundles(ctx, "mine.org")
	if len(again) != 1 || again[0].Roots[0] != got[0].Roots[0] {
		t.Error("second call parsed the stored bundle again")
	}
}

// TestHeldWithholdsOversizedStoredBundle: a stored bundle whose roots are
// over what a mesh may hold (stored before the cap existed) is withheld
// with reason too_large.
func TestHeldWithholdsOversizedStoredBundle(t *testing.T) {
	st := newStore(t)
	addPeerRaw(t, st, store.FederationPeer{TrustDomain: "big.org", URL: "https://127.0.0.1:1/", Bundle: bundleDoc(t, "big.org", 1, 0, overMeshBudget(t, "big.org")...), Sequence: 1})
	got, err := NewHeld(st, quietLog(t)).Bundles(context.Background(), "mine.org")
	if err != nil || len(got) != 0 {
		t.Fatalf("delivered %d bundles (%v), want the oversized one withheld", len(got), err)
	}
	if withheld("big.org", bundle.ReasonTooLarge) != 1 {
		t.Error("meshroot_federation_withheld{reason=too_large} is not 1")
	}
}

// TestFederatorRefusesOwnTrustDomain: the watcher does not fetch roots for
// a peer of our own trust domain; it records why.
func TestFederatorRefusesOwnTrustDomain(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	webCA := newCA(t, "")
	p := newPeer(t, webCA.Leaf(t, testca.LeafOpts{IP: true}), serveDoc(bundleDoc(t, "self.org", 9, 0, newCA(t, "self.org"))))
	addPeer(t, st, store.FederationPeer{TrustDomain: "self.org", URL: p.url})
	setOwnTrustDomain(t, st, "self.org")
	f := NewFederator(st, FederatorOptions{MinRefresh: time.Second, PollPeers: 50 * time.Millisecond, Roots: webCA.Pool(), Log: quietLog(t)})
	runFederator(t, f)
	var now store.FederationPeer
	waitFor(t, 5*time.Second, "own_trust_domain recorded", func() bool {
		now = getPeer(t, st, "self.org")
		return strings.HasPrefix(now.Status.LastError, bundle.ReasonOwnTrustDomain+": ")
	})
	if len(now.Bundle) != 0 || p.requests.Load() != 0 {
		t.Fatalf("fetched %d times and stored %d bytes for our own trust domain", p.requests.Load(), len(now.Bundle))
	}
	if count("self.org", bundle.ReasonOwnTrustDomain) < 1 {
		t.Error("meshroot_federation_fetch_total{result=own_trust_domain} did not move")
	}
}
