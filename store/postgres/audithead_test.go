package postgres

import (
	"fmt"
	"testing"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/postgres/pgtest"
)

// TestAuditHeadCachedWithinTransaction: a transaction that appends several
// rows (the later ones from the head it cached) and an append through
// another store (replica) in between make one chain: consecutive seqs,
// each row pointing at the one before, and the stored head at the last.
func TestAuditHeadCachedWithinTransaction(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	a, b := openTest(t, dsn), openTest(t, dsn)
	ctx := t.Context()
	appendN := func(s *Store, who string, n int) []store.AuditEntry {
		var out []store.AuditEntry
		err := s.Update(ctx, func(tx store.Tx) error {
			out = nil
			for i := range n {
				e, err := tx.AppendAudit(ctx, store.AuditEntry{Actor: who, Action: "test.append", Target: fmt.Sprint(i), Result: "ok", Details: "{}"})
				if err != nil {
					return err
				}
				out = append(out, e)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", who, err)
		}
		return out
	}
	got := appendN(a, "a", 3)
	got = append(got, appendN(b, "b", 2)...)
	got = append(got, appendN(a, "a", 2)...)
	for i, e := range got {
		if e.Seq != int64(i+1) {
			t.Errorf("append %d got seq %d, want %d", i, e.Seq, i+1)
		}
		if i > 0 && e.PrevHash != got[i-1].Hash {
			t.Errorf("append %d (seq %d) points at %q, want the previous row's hash %q", i, e.Seq, e.PrevHash, got[i-1].Hash)
		}
	}
	head, err := b.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if last := got[len(got)-1]; head.Seq != last.Seq || head.Hash != last.Hash {
		t.Errorf("head = %d/%s, want the last row %d/%s", head.Seq, head.Hash, last.Seq, last.Hash)
	}
	if err := a.VerifyAudit(ctx); err != nil {
		t.Errorf("audit chain: %v", err)
	}
}
