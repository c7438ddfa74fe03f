package sqlite

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
)

// TestStatementCache: the statements of reads and of Updates are prepared
// once and reused (the writer's only after the transaction that first
// asked for them, while its connection is free), and a query that cannot
// be prepared still reports its own error.
func TestStatementCache(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "m.db"))
	ctx := context.Background()
	for i := range 3 {
		if err := s.Update(ctx, func(tx store.Tx) error {
			return tx.CreateCluster(ctx, store.Cluster{Name: "c" + string(rune('a'+i)), TrustDomain: "example.org", CreatedAt: time.Now()})
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetCluster(ctx, "ca"); err != nil {
			t.Fatal(err)
		}
	}
	cached := func(c *stmtCache) int {
		c.mu.Lock()
		defer c.mu.Unlock()
		n := 0
		for q, st := range c.m {
			if st != nil && strings.Contains(q, "clusters") {
				n++
			}
		}
		return n
	}
	if n := cached(s.rc); n != 1 {
		t.Errorf("reader: %d prepared statements on clusters after three identical reads; want 1", n)
	}
	if n := cached(s.wc); n == 0 {
		t.Error("writer: the INSERT into clusters was not prepared after three Updates")
	}
	_, err := s.reader.q.ExecContext(ctx, `SELECT no_such_column FROM clusters`)
	if err == nil || !strings.Contains(err.Error(), "no_such_column") {
		t.Errorf("bad query through the cache: %v; want SQLite's error naming the column", err)
	}
}
