package server_test

import (
	"context"
	"crypto/sha256"
	"sort"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/meshroot/meshroot/agent"
	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
)

// setKeys is a CRL set message's entries as sorted hashes, to compare
// sets whatever their order.
func setKeys(m *meshrootv1.CRLSet) (crls, inters []string) {
	for _, d := range m.GetCrls() {
		h := sha256.Sum256(d)
		crls = append(crls, string(h[:]))
	}
	for _, d := range m.GetIntermediates() {
		h := sha256.Sum256(d)
		inters = append(inters, string(h[:]))
	}
	sort.Strings(crls)
	sort.Strings(inters)
	return crls, inters
}

// TestWatchSendsCRLDeltas: an agent that asks for deltas gets the whole
// CRL set first, then only what changed (an intermediate issued, a root's
// CRL added by prepare, removed by rollback), and applying each delta
// gives exactly the whole set the server holds; an agent that does not
// ask keeps getting whole sets.
func TestWatchSendsCRLDeltas(t *testing.T) {
	ts := startServer(t)
	roots := ts.bootstrap(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c := ts.issuerClient(t, roots, nil)

	deltas, err := c.WatchTrustBundle(ctx, &meshrootv1.WatchTrustBundleRequest{Cluster: "east", CrlDeltas: true})
	if err != nil {
		t.Fatal(err)
	}
	whole, err := c.WatchTrustBundle(ctx, &meshrootv1.WatchTrustBundleRequest{Cluster: "west"})
	if err != nil {
		t.Fatal(err)
	}
	var held *meshrootv1.CRLSet
	var lastSeq uint64
	// next receives the delta stream's next message, applies it and checks
	// the result against the server's whole set at the same sequence.
	next := func(step string) *meshrootv1.CRLSet {
		t.Helper()
		msg, err := deltas.Recv()
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		got := msg.GetCrls()
		if held, err = agent.ApplyCRLDelta(held, got); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		full, err := c.GetTrustBundle(ctx, &meshrootv1.GetTrustBundleRequest{})
		if err != nil {
			t.Fatal(err)
		}
		hc, hi := setKeys(held)
		fc, fi := setKeys(full.GetCrls())
		if !equalStrings(hc, fc) || !equalStrings(hi, fi) {
			t.Fatalf("%s: the applied set has %d CRLs, %d intermediates; the server's %d, %d (or other entries)", step, len(hc), len(hi), len(fc), len(fi))
		}
		lastSeq = msg.GetSequence()
		return got
	}

	first := next("first message")
	if first.GetDelta() || len(first.GetCrls()) == 0 {
		t.Fatalf("first message of a stream: delta %v with %d CRLs; want the whole set", first.GetDelta(), len(first.GetCrls()))
	}

	// An intermediate issued: the delta carries it and nothing else.
	req, _ := csr(t)
	if _, err := c.SignIntermediate(withJoinToken(ctx, ts.token(t, "east")), &meshrootv1.SignIntermediateRequest{Cluster: "east", Csr: req.Raw}); err != nil {
		t.Fatal(err)
	}
	d := next("after an issuance")
	if !d.GetDelta() || len(d.GetIntermediates()) != 1 || len(d.GetCrls()) != 0 || len(d.GetRemoved()) != 0 {
		t.Fatalf("after an issuance: delta %v, %d intermediates, %d CRLs, %d removed; want only the new intermediate",
			d.GetDelta(), len(d.GetIntermediates()), len(d.GetCrls()), len(d.GetRemoved()))
	}

	// A root prepared: its CRL is added, nothing else re-sent.
	if _, err := ts.admin.PrepareRoot(ctx, &meshrootv1.PrepareRootRequest{}); err != nil {
		t.Fatal(err)
	}
	for d = next("after prepare"); len(d.GetCrls()) == 0 && lastSeq < 2; d = next("after prepare") {
	}
	if !d.GetDelta() || len(d.GetCrls()) != 1 || len(d.GetIntermediates()) != 0 {
		t.Fatalf("after prepare: delta %v, %d CRLs, %d intermediates; want the new root's CRL only", d.GetDelta(), len(d.GetCrls()), len(d.GetIntermediates()))
	}

	// Rolled back: the root's CRL is removed by its key.
	if _, err := ts.admin.RollbackRoot(ctx, &meshrootv1.PhaseRequest{}); err != nil {
		t.Fatal(err)
	}
	for d = next("after rollback"); len(d.GetRemoved()) == 0 && lastSeq < 3; d = next("after rollback") {
	}
	if !d.GetDelta() || len(d.GetRemoved()) != 1 || len(d.GetCrls()) != 0 {
		t.Fatalf("after rollback: delta %v, %d removed, %d CRLs; want one removal", d.GetDelta(), len(d.GetRemoved()), len(d.GetCrls()))
	}

	// The stream that did not ask for deltas got whole sets throughout.
	var w *meshrootv1.TrustBundle
	for w == nil || w.GetSequence() < lastSeq {
		if w, err = whole.Recv(); err != nil {
			t.Fatal(err)
		}
		if w.GetCrls().GetDelta() {
			t.Fatal("a stream that did not ask for deltas got one")
		}
	}
	full, err := c.GetTrustBundle(ctx, &meshrootv1.GetTrustBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(w.GetCrls(), full.GetCrls()) {
		t.Error("the whole-set stream's last message differs from the server's set")
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
