package sqlite

import (
	"errors"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
)

// TestVerifyAuditInConstantMemory: verifying a 60 MB audit log holds one
// row at a time. Before the fix, VerifyAudit read every row into memory
// first, so the heap grew by the size of the log.
func TestVerifyAuditInConstantMemory(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "meshroot.db"))
	ctx := t.Context()
	const rows = 15000
	details := `{"note":"` + strings.Repeat("x", 4000) + `"}`
	if err := s.Update(ctx, func(tx store.Tx) error {
		for range rows {
			if _, err := tx.AppendAudit(ctx, store.AuditEntry{Time: time.Now(), Actor: "test", Action: "test.fill", Result: "ok", Details: details}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.HeapInuse
	var peak atomic.Uint64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	err := s.VerifyAudit(ctx)
	close(stop)
	<-done
	if err != nil {
		t.Fatalf("VerifyAudit: %v", err)
	}
	growth := int64(peak.Load()) - int64(before)
	t.Logf("verified %d rows (%d MB of details); heap in use grew by %d KB", rows, rows*len(details)>>20, growth>>10)
	if growth > 16<<20 {
		t.Errorf("heap in use grew by %d MB while verifying: the log is held in memory", growth>>20)
	}

	if n, err := s.VerifyAuditRows(ctx); err != nil || n != rows {
		t.Errorf("VerifyAuditRows = %d, %v; want %d, nil", n, err, rows)
	}
	// A row edited in the middle (by someone who dropped the trigger) is
	// still found.
	for _, q := range []string{`DROP TRIGGER audit_log_no_update`, `UPDATE audit_log SET details = '{}' WHERE seq = 7000`} {
		if _, err := s.w.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	var ce *store.ChainError
	if _, err := s.VerifyAuditRows(ctx); !errors.As(err, &ce) || ce.Seq != 7000 {
		t.Errorf("after editing seq 7000: %v, want a ChainError at 7000", err)
	}
}
