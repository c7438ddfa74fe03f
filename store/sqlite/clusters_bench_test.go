package sqlite

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
)

// BenchmarkGetCluster reads a registered cluster with no service accounts
// or permitted names, as an issuance does three times (authentication,
// the service's check, the transaction's re-check).
func BenchmarkGetCluster(b *testing.B) {
	s, err := open(context.Background(), filepath.Join(b.TempDir(), "m.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Update(ctx, func(tx store.Tx) error {
		return tx.CreateCluster(ctx, store.Cluster{Name: "c1", TrustDomain: "example.org", CreatedAt: time.Now()})
	}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.GetCluster(ctx, "c1"); err != nil {
			b.Fatal(err)
		}
	}
}
