package postgres

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/meshroot/meshroot/store/postgres/pgtest"
	"github.com/meshroot/meshroot/store/sqlite"
	"github.com/meshroot/meshroot/store/storetest"
)

// BenchmarkIssuanceTxnPostgres also reports stmts/txn: the statements
// (each one round trip to the server, most of them under the write lock)
// per issuance transaction, commits and savepoints included, which does
// not depend on the load of the machine as txn/s does.
func BenchmarkIssuanceTxnPostgres(b *testing.B) {
	var n atomic.Int64
	testTracer = countTracer{&n}
	s := openTest(b, pgtest.NewDatabase(b))
	testTracer = nil
	storetest.BenchIssuance(b, s.asStore(), func() { n.Store(0) })
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
	storetest.BenchIssuance(b, s, nil)
}
