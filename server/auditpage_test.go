package server_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/store"
)

// TestListAuditPagesFitTheMessageLimit: a log whose first 10,000 rows are
// more than a gRPC client takes in one message (4 MiB) is listed in pages
// that each fit, and following them yields every row once. Before the
// fix, the first page was all 10,000 rows and the client refused it.
func TestListAuditPagesFitTheMessageLimit(t *testing.T) {
	ts := startServer(t)
	ctx := t.Context()
	const rows = 6000
	details := `{"note":"` + strings.Repeat("x", 1000) + `"}`
	if err := ts.st.Update(ctx, func(tx store.Tx) error {
		for range rows {
			if _, err := tx.AppendAudit(ctx, store.AuditEntry{Time: time.Now(), Actor: "test", Action: "test.fill", Result: "ok", Details: details}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var after int64
	seen := 0
	for pages := 0; ; pages++ {
		if pages > rows {
			t.Fatal("paging does not end")
		}
		resp, err := ts.admin.ListAudit(ctx, &meshrootv1.ListAuditRequest{AfterSeq: after}, grpc.MaxCallRecvMsgSize(4<<20))
		if err != nil {
			t.Fatalf("page after seq %d: %v", after, err)
		}
		if n := proto.Size(resp); n > 2<<20 {
			t.Errorf("page after seq %d is %d bytes", after, n)
		}
		if len(resp.GetEntries()) == 0 {
			break
		}
		for _, e := range resp.GetEntries() {
			if e.GetSeq() != after+1 {
				t.Fatalf("entry seq %d follows %d", e.GetSeq(), after)
			}
			after = e.GetSeq()
			seen++
		}
	}
	if seen != rows {
		t.Errorf("listed %d rows, want %d", seen, rows)
	}
	v, err := ts.admin.VerifyAudit(ctx, &meshrootv1.VerifyAuditRequest{})
	if err != nil || v.GetEntries() != rows {
		t.Errorf("VerifyAudit = %d entries, %v; want %d", v.GetEntries(), err, rows)
	}
}
