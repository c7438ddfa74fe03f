package agent

import (
	"fmt"
	"runtime"
	"runtime/metrics"
	"testing"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
)

// BenchmarkFleetStateHeld measures the memory one agent keeps between
// bundle changes in a fleet of N clusters: the last bundle message (its
// CRL set lists every cluster's intermediate and CRL), the parsed
// intermediates and CRLs its caches keep, after one plan before and one
// after the first ca-crl.pem write (what planCRL, ownCurrent and the
// report do), and the Secret's ca-crl.pem as written, which the agent
// keeps for the next change's reconcile (knownsecret.go). It reports
// held-B/agent: the
// live heap after a GC with that state kept, less the heap before it was
// built; in a fleet, every agent holds this much on top of its idle RSS.
// held-objects/agent and scan-B/agent are the objects and the scannable
// bytes (runtime/metrics /gc/scan/heap:bytes: what holds pointers) in
// that state: what a collection marks, and so what it costs, while the
// bytes of DER, PEM and files are only marked live.
func BenchmarkFleetStateHeld(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("clusters=%d", n), func(b *testing.B) {
			f := newBenchFleet(b, n, false)
			set := &meshrootv1.CRLSet{}
			for i, c := range f.cas[1:] {
				set.Intermediates = append(set.Intermediates, append([]byte(nil), c.Raw...))
				set.Crls = append(set.Crls, append([]byte(nil), f.crls[i+1]...))
			}
			set.Crls = append(set.Crls, append([]byte(nil), f.crls[0]...))
			roots := f.cas[:1]
			var held, objects, scan uint64
			for b.Loop() {
				before := liveHeap()
				before2 := heapShape()
				a := &Agent{bundle: &meshrootv1.TrustBundle{Crls: cloneSet(set)}}
				inters, err := a.certs.intermediates(a.bundle.GetCrls())
				if err != nil {
					b.Fatal(err)
				}
				cas := append(crlCAs(roots), inters...)
				file := planCRLFile(&a.crls, cas, a.crls.setEntries(a.bundle.GetCrls()), f.now).PEM
				if file == nil {
					b.Fatal("no ca-crl.pem planned")
				}
				file = append([]byte(nil), file...) // the Secret's copy
				p := planPublishedCRLFile(&a.crls, cas, a.crls.setEntries(a.bundle.GetCrls()), file, f.now)
				if len(p.Missing) != 0 {
					b.Fatalf("missing %v", p.Missing)
				}
				appliedRootCRLs(&a.crls, file, roots)
				after := liveHeap()
				after2 := heapShape()
				runtime.KeepAlive(a)
				runtime.KeepAlive(file)
				held = after - before
				objects, scan = after2.objects-before2.objects, after2.scan-before2.scan
			}
			b.ReportMetric(float64(held), "held-B/agent")
			b.ReportMetric(float64(objects), "held-objects/agent")
			b.ReportMetric(float64(scan), "scan-B/agent")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// cloneSet copies m's byte slices, as a message unmarshalled from the wire
// holds its own.
func cloneSet(m *meshrootv1.CRLSet) *meshrootv1.CRLSet {
	out := &meshrootv1.CRLSet{}
	for _, d := range m.GetCrls() {
		out.Crls = append(out.Crls, append([]byte(nil), d...))
	}
	for _, d := range m.GetIntermediates() {
		out.Intermediates = append(out.Intermediates, append([]byte(nil), d...))
	}
	return out
}

// heapState is the heap's live objects and scannable bytes as of the last
// collection.
type heapState struct{ objects, scan uint64 }

// heapShape reads heapState; call it right after liveHeap.
func heapShape() heapState {
	s := []metrics.Sample{{Name: "/gc/heap/objects:objects"}, {Name: "/gc/scan/heap:bytes"}}
	metrics.Read(s)
	return heapState{objects: s[0].Value.Uint64(), scan: s[1].Value.Uint64()}
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
