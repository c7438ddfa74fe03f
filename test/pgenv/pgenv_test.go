package pgenv

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// A committed row survives an immediate (crash) restart, and a connection
// open across the restart is broken by it.
func TestRestartKeepsCommits(t *testing.T) {
	s := Start(t)
	dsn := s.NewDatabase(t, "pgenv_test")
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE TABLE t (v INT); INSERT INTO t VALUES (42)`); err != nil {
		t.Fatal(err)
	}
	s.Restart(t, "immediate")
	if err := conn.Ping(ctx); err == nil {
		t.Error("a connection opened before the restart still answers")
	}
	conn2, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close(context.Background())
	var v int
	if err := conn2.QueryRow(ctx, `SELECT v FROM t`).Scan(&v); err != nil || v != 42 {
		t.Fatalf("after the restart: %d, %v; want the committed 42", v, err)
	}
}
