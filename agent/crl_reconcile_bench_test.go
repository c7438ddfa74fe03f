package agent

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"testing"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/kubeclient"
)

// BenchmarkCRLReconcileFleet times the CRL work of one agent's reconcile
// at a bundle change in a fleet of N clusters, through the agent's own
// methods: planning ca-crl.pem over the new message's CRL set and the
// file the Secret holds, asking whether the server's set lacks the
// cluster's CRL (before and in the status report), and reading which
// root CRLs the file enforces. Each iteration is a new bundle message,
// its CRL set as received (new bytes, the same CRLs), and a new read of
// the Secret; the caches are warm, as after the first reconcile. It calls
// only methods whose signatures older code shares, so that the same file
// measures both sides of a change.
func BenchmarkCRLReconcileFleet(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("clusters=%d", n), func(b *testing.B) {
			f := newBenchFleet(b, n, false)
			set := &meshrootv1.CRLSet{Crls: f.crls}
			for _, c := range f.cas[1:] {
				set.Intermediates = append(set.Intermediates, c.Raw)
			}
			roots := f.cas[:1]
			cc := &ca.CACerts{Cert: f.cas[1], Key: f.keys[1], Chain: f.cas[1:2], Roots: roots}
			a := &Agent{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			message := func() *meshrootv1.TrustBundle {
				m := &meshrootv1.TrustBundle{Roots: [][]byte{roots[0].Raw}, Crls: cloneSet(set)}
				a.mu.Lock()
				a.bundle = m
				a.mu.Unlock()
				return m
			}
			secret := &kubeclient.Secret{Data: map[string][]byte{}}
			first, _, ok, err := a.planCRL(&Current{Secret: secret, CACerts: cc}, cc, message(), f.now)
			if err != nil || !ok || first.PEM == nil || len(first.Missing) != 0 {
				b.Fatalf("first plan: %v, ok %v, missing %v", err, ok, first.Missing)
			}
			held := append([]byte(nil), first.PEM...)
			secret.Annotations = map[string]string{AnnotationCRLWritten: f.now.Format("2006-01-02T15:04:05Z07:00")}
			read := func() *Current { // each read of the Secret is a new copy
				s := *secret
				s.Data = map[string][]byte{CRLFile: append([]byte(nil), held...)}
				return &Current{Secret: &s, CACerts: cc}
			}
			work := func(bundle *meshrootv1.TrustBundle, cur *Current) {
				if a.bundleLacksOwnCRL(cc, f.now) {
					b.Fatal("the set's own CRL was not found")
				}
				plan, published, _, err := a.planCRL(cur, cc, bundle, f.now)
				if err != nil || !published || !bytes.Equal(plan.PEM, held) {
					b.Fatalf("plan: %v, published %v, the held file again %v", err, published, bytes.Equal(plan.PEM, held))
				}
				if der := a.crlForReport(cur, f.now); der != nil {
					b.Fatal("a CRL reported while the set holds the cluster's")
				}
				if got := appliedRootCRLs(&a.crls, cur.Secret.Data[CRLFile], roots); len(got) != 1 {
					b.Fatalf("applied root CRLs %v", got)
				}
			}
			work(message(), read())
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				bundle, cur := message(), read()
				b.StartTimer()
				work(bundle, cur)
			}
		})
	}
}
