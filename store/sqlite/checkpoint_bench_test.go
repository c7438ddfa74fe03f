package sqlite

import (
	"path/filepath"
	"testing"

	"github.com/meshroot/meshroot/store/storetest"
)

// BenchmarkIssuanceTxnCheckpoints measures the issuance transaction (32
// callers per CPU, group commit) with the WAL checkpointed the two ways, in
// one run:
//
//   - in-commit: SQLite's automatic checkpoint (wal_autocheckpoint 1000),
//     run inside the commit that takes the WAL past 1,000 pages;
//   - beside: the store's own, which copies the bulk beside the writer
//     (checkpoint.go).
//
// Compare txn/s and p99-ms: go test -run XXX -bench IssuanceTxnCheckpoints
// -benchtime 5s -count 3 ./store/sqlite/
func BenchmarkIssuanceTxnCheckpoints(b *testing.B) {
	for _, mode := range []string{"in-commit", "beside"} {
		b.Run(mode, func(b *testing.B) {
			s, err := open(b.Context(), filepath.Join(b.TempDir(), "meshroot.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if mode == "in-commit" {
				// The writer pool's one connection keeps this setting.
				if _, err := s.w.ExecContext(b.Context(), `PRAGMA wal_autocheckpoint = 1000`); err != nil {
					b.Fatal(err)
				}
				s.ckpt.soft, s.ckpt.hard = 1<<62, 1<<62
			}
			storetest.BenchIssuance(b, s.asStore(), nil)
			b.ReportMetric(float64(s.ckpt.bulk.Load())*1000/float64(b.N), "ckpts/1000txn")
		})
	}
}
