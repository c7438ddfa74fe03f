package server

import (
	"crypto/x509"
	"fmt"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/meshroot/meshroot/agent"
	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
)

// fleetSet is a CRL set of n clusters (a CRL and an intermediate each) and
// a root CRL; only the DER bytes matter here.
func fleetSet(from, n int) ca.CRLSet {
	s := ca.CRLSet{CRLs: [][]byte{[]byte("root-crl")}}
	for i := from; i < from+n; i++ {
		s.CRLs = append(s.CRLs, fmt.Appendf(nil, "crl-%d", i))
		s.Intermediates = append(s.Intermediates, &x509.Certificate{Raw: fmt.Appendf(nil, "intermediate-%d", i)})
	}
	return s
}

func wholeOf(set ca.CRLSet) *meshrootv1.CRLSet {
	m := &meshrootv1.CRLSet{Crls: set.CRLs, Missing: set.Missing}
	for _, c := range set.Intermediates {
		m.Intermediates = append(m.Intermediates, c.Raw)
	}
	return m
}

func sameSet(t *testing.T, what string, got, want *meshrootv1.CRLSet) {
	t.Helper()
	sorted := func(l [][]byte) []string {
		var out []string
		for _, b := range l {
			out = append(out, string(b))
		}
		slices.Sort(out)
		return out
	}
	if !slices.Equal(sorted(got.GetCrls()), sorted(want.GetCrls())) || !slices.Equal(sorted(got.GetIntermediates()), sorted(want.GetIntermediates())) ||
		!slices.Equal(got.GetMissing(), want.GetMissing()) {
		t.Fatalf("%s: the agent's set %v / %v / %v, want %v / %v / %v", what, sorted(got.GetCrls()), sorted(got.GetIntermediates()), got.GetMissing(),
			sorted(want.GetCrls()), sorted(want.GetIntermediates()), want.GetMissing())
	}
}

// TestCRLSnapshotDeltas: streams get the whole set first, then deltas
// that rebuild each new set exactly (agent.ApplyCRLDelta), including for
// a stream that skipped versions; streams that had the same set share one
// delta message; a set whose entries did not change keeps its snapshot.
func TestCRLSnapshotDeltas(t *testing.T) {
	v1 := newCRLSnapshot(fleetSet(0, 5), nil)
	if again := newCRLSnapshot(fleetSet(0, 5), v1); again != v1 {
		t.Error("an unchanged set got a new snapshot: every stream would be sent an empty delta computed anew")
	}
	var a, b, late crlStream
	var setA, setB, setLate *meshrootv1.CRLSet
	apply := func(base **meshrootv1.CRLSet, m *meshrootv1.CRLSet) {
		t.Helper()
		got, err := agent.ApplyCRLDelta(*base, m)
		if err != nil {
			t.Fatal(err)
		}
		*base = got
	}
	apply(&setA, a.message(v1))
	apply(&setB, b.message(v1))
	apply(&setLate, late.message(v1))
	sameSet(t, "first message", setA, wholeOf(fleetSet(0, 5)))

	// Cluster 0 leaves, cluster 5 joins.
	s2 := fleetSet(1, 5)
	s2.Missing = []string{"intermediate-5"}
	v2 := newCRLSnapshot(s2, v1)
	ma, mb := a.message(v2), b.message(v2)
	if ma != mb {
		t.Error("two streams that had the same set got two delta messages")
	}
	if !ma.GetDelta() || len(ma.GetCrls()) != 1 || len(ma.GetIntermediates()) != 1 || len(ma.GetRemoved()) != 2 {
		t.Fatalf("delta = %d CRLs, %d intermediates, %d removed (delta %v); want 1, 1, 2", len(ma.GetCrls()), len(ma.GetIntermediates()), len(ma.GetRemoved()), ma.GetDelta())
	}
	apply(&setA, ma)
	sameSet(t, "after one change", setA, wholeOf(s2))

	// More changes than the snapshot keeps deltas for, each from another
	// version: every stream still gets the right delta.
	streams := make([]crlStream, maxDeltasKept+3)
	sets := make([]*meshrootv1.CRLSet, len(streams))
	snap := v2
	for i := range streams {
		snap = newCRLSnapshot(fleetSet(2+i, 5), snap)
		apply(&sets[i], streams[i].message(snap))
	}
	s3 := fleetSet(40, 3)
	v3 := newCRLSnapshot(s3, snap)
	for i := range streams {
		apply(&sets[i], streams[i].message(v3))
		sameSet(t, fmt.Sprintf("stream %d", i), sets[i], wholeOf(s3))
	}
	apply(&setLate, late.message(v3)) // skipped v2 and the rest
	sameSet(t, "a stream that skipped versions", setLate, wholeOf(s3))
}

// BenchmarkCRLDeltaFanOut: the CRL set messages of one change (a cluster
// joins a fleet of n) for 1,000 watch streams, marshalled: the server's
// share of a change that depends on the fleet's size.
func BenchmarkCRLDeltaFanOut(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("clusters=%d/watchers=1000", n), func(b *testing.B) {
			streams := make([]crlStream, 1000)
			snap := newCRLSnapshot(fleetSet(0, n), nil)
			for i := range streams {
				streams[i].message(snap)
			}
			next := n
			b.ReportAllocs()
			for b.Loop() {
				snap = newCRLSnapshot(fleetSet(next-n+1, n), snap)
				next++
				for i := range streams {
					m := &meshrootv1.TrustBundle{Crls: streams[i].message(snap)}
					if _, err := proto.Marshal(m); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
