package main

import (
	"context"
	"testing"

	"github.com/meshroot/meshroot/store"
)

// pagedBackend answers ListAudit with at most pageMax entries, as the
// server does when a page would exceed its size limit.
type pagedBackend struct {
	rows, pageMax int
	calls         int
}

func (p *pagedBackend) ListAudit(_ context.Context, after int64, limit int) ([]store.AuditEntry, error) {
	p.calls++
	var out []store.AuditEntry
	for s := after + 1; s <= int64(p.rows) && len(out) < min(limit, p.pageMax); s++ {
		out = append(out, store.AuditEntry{Seq: s})
	}
	return out, nil
}

// TestListAuditFollowsPages: the CLI reads on after a short page until a
// page is empty (or it has the entries asked for), so a server that caps
// pages by size does not cut the listing short.
func TestListAuditFollowsPages(t *testing.T) {
	for _, tc := range []struct{ limit, want int }{{0, 2500}, {1200, 1200}, {3000, 2500}} {
		b := &pagedBackend{rows: 2500, pageMax: 7}
		got, err := listAuditPages(t.Context(), b, 0, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != tc.want {
			t.Errorf("limit %d: %d entries, want %d", tc.limit, len(got), tc.want)
		}
		for i, e := range got {
			if e.Seq != int64(i+1) {
				t.Fatalf("limit %d: entry %d has seq %d", tc.limit, i, e.Seq)
			}
		}
	}
}
