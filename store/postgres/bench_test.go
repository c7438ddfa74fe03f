package postgres

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/postgres/pgtest"
	"github.com/meshroot/meshroot/store/sqlite"
)

// benchIssuance measures the transaction of an intermediate's issuance (the
// reads that re-check its preconditions, supersede, status, insert, audit)
// with 32 callers per CPU, on s; started (if set) is called when the
// measurement starts.
func benchIssuance(b *testing.B, s store.Store, started func()) {
	ctx := b.Context()
	now := time.Now()
	const clusters = 64
	err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.CreateRoot(ctx, store.Root{ID: "r1", TrustDomain: "example.org", State: store.RootActive, KeyRef: "k", ChainPEM: []byte("c"), NotAfter: now.Add(time.Hour), CreatedAt: now}); err != nil {
			return err
		}
		for i := range clusters {
			if err := tx.CreateCluster(ctx, store.Cluster{Name: fmt.Sprint("c", i), TrustDomain: "example.org", CreatedAt: now}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	var serial atomic.Int64
	b.SetParallelism(32)
	if started != nil {
		started()
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := serial.Add(1)
			cluster := fmt.Sprint("c", n%clusters)
			err := s.Update(ctx, func(tx store.Tx) error {
				if _, err := tx.GetRoot(ctx, "r1"); err != nil {
					return err
				}
				cl, err := tx.GetCluster(ctx, cluster)
				if err != nil {
					return err
				}
				if _, err := tx.SupersedeIntermediates(ctx, cluster, now); err != nil {
					return err
				}
				cl.Status.IntermediateSerial = fmt.Sprintf("%x", n)
				if err := tx.UpdateClusterStatus(ctx, cluster, cl.Status); err != nil {
					return err
				}
				if err := tx.CreateIntermediate(ctx, store.Intermediate{Serial: fmt.Sprintf("%x", n), Cluster: cluster, RootID: "r1",
					NotBefore: now, NotAfter: now.Add(time.Hour), Status: store.IntermediateActive, CertPEM: make([]byte, 700), CreatedAt: now}); err != nil {
					return err
				}
				_, err = tx.AppendAudit(ctx, store.AuditEntry{Actor: "cluster:" + cluster, Action: "intermediate.issue", Target: cluster, Result: "ok", Details: `{"serial":"x"}`})
				return err
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "txn/s")
}

// BenchmarkIssuanceTxnPostgres also reports stmts/txn: the statements
// (each one round trip to the server, most of them under the write lock)
// per issuance transaction, commits and savepoints included, which does
// not depend on the load of the machine as txn/s does.
func BenchmarkIssuanceTxnPostgres(b *testing.B) {
	var n atomic.Int64
	testTracer = countTracer{&n}
	s := openTest(b, pgtest.NewDatabase(b))
	testTracer = nil
	benchIssuance(b, s.asStore(), func() { n.Store(0) })
	b.ReportMetric(float64(n.Load())/float64(b.N), "stmts/txn")
}

// countTracer counts the statements sent.
type countTracer struct{ n *atomic.Int64 }

func (c countTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (countTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func BenchmarkIssuanceTxnSQLite(b *testing.B) {
	s, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "meshroot.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	benchIssuance(b, s, nil)
}
