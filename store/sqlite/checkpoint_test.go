package sqlite

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
)

// appendBig appends n audit entries of ~2 KiB each from conc goroutines, one
// Update each, so that batches of several Updates form as in a server.
func appendBig(t *testing.T, s *Store, n, conc int) {
	t.Helper()
	details := `{"pad":"` + strings.Repeat("x", 2000) + `"}`
	var wg sync.WaitGroup
	errs := make(chan error, conc)
	for g := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += conc {
				err := s.Update(t.Context(), func(tx store.Tx) error {
					_, err := tx.AppendAudit(t.Context(), store.AuditEntry{
						Time: time.Now(), Actor: "test", Action: "test.append", Target: "t", Result: "ok", Details: details,
					})
					return err
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func walSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestCheckpointsBoundTheWAL writes ~8 MB through a store whose writer runs
// without SQLite's automatic checkpoint: the store's own checkpoints must
// keep starting the WAL over, so that the -wal file stays near its
// threshold. The same writes with the checkpointer never asked show what
// the WAL would grow to.
func TestCheckpointsBoundTheWAL(t *testing.T) {
	const soft, hard, pageSize = 200, 1600, 4096
	for _, c := range []struct {
		name      string
		soft      int
		wantBound bool
	}{
		{"checkpoints", soft, true},
		{"none (control)", 1 << 30, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "meshroot.db")
			s := openTest(t, path)
			s.ckpt.soft, s.ckpt.hard = c.soft, hard
			appendBig(t, s, 4000, 16)
			size := walSize(t, path)
			// The WAL holds at most the hard limit's pages plus the batch
			// that crossed it (64 Updates of a few pages each).
			bound := int64(hard+64*4) * (pageSize + 24)
			t.Logf("WAL %d bytes; checkpoints: %d, reaching the end of the WAL: %d", size, s.ckpt.bulk.Load(), s.ckpt.finished.Load())
			if c.wantBound {
				if size > bound {
					t.Errorf("WAL grew to %d bytes, over %d", size, bound)
				}
				if s.ckpt.bulk.Load() == 0 || s.ckpt.finished.Load() == 0 {
					t.Errorf("%d checkpoints, %d reaching the end of the WAL: want some of each", s.ckpt.bulk.Load(), s.ckpt.finished.Load())
				}
			} else if size <= bound {
				t.Errorf("without checkpoints the WAL is %d bytes, under %d: the test writes too little to show anything", size, bound)
			}
			if err := s.VerifyAudit(t.Context()); err != nil {
				t.Fatal(err)
			}
			list, err := s.ListAudit(t.Context(), 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 4000 {
				t.Fatalf("%d audit entries, want 4000", len(list))
			}
		})
	}
}

// TestPagesWritten checks the count that decides when to checkpoint: the
// pages a commit writes to the WAL, each read once. No Update runs here, so
// the writer goroutine leaves the counter alone.
func TestPagesWritten(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "meshroot.db"))
	ctx := context.Background()
	s.pagesWritten() // the migrations' pages
	if _, err := s.w.ExecContext(ctx, `CREATE TABLE scratch (b BLOB)`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.ExecContext(ctx, `INSERT INTO scratch VALUES (zeroblob(40000))`); err != nil {
		t.Fatal(err)
	}
	if n := s.pagesWritten(); n < 10 {
		t.Errorf("a table and a 40 kB row wrote %d pages, want at least 10", n)
	}
	if n := s.pagesWritten(); n != 0 {
		t.Errorf("read again: %d pages, want 0", n)
	}
}

// TestCheckpointerBehindStopsTheWriter holds the checkpointer back: the
// writer must stop committing once the WAL holds the hard limit's pages,
// and go on when the checkpoint is done, so that the WAL stays bounded
// however slow the checkpointer is. Close must not hang on a writer that
// waits.
func TestCheckpointerBehindStopsTheWriter(t *testing.T) {
	const soft, hard, pageSize = 100, 400, 4096
	path := filepath.Join(t.TempDir(), "meshroot.db")
	s, err := open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	held := make(chan struct{}, 1)
	s.ckpt.soft, s.ckpt.hard = soft, hard
	s.ckpt.beforeBulk = func() {
		select {
		case held <- struct{}{}:
		default:
		}
		select { // a real checkpoint ends with its I/O; this one at Close
		case <-release:
		case <-s.closing:
		}
	}
	var wrote atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		details := `{"pad":"` + strings.Repeat("x", 2000) + `"}`
		for range 3000 {
			err := s.Update(context.Background(), func(tx store.Tx) error {
				_, err := tx.AppendAudit(context.Background(), store.AuditEntry{
					Time: time.Now(), Actor: "test", Action: "test.append", Target: "t", Result: "ok", Details: details,
				})
				return err
			})
			if err != nil {
				return
			}
			wrote.Add(1)
		}
	}()
	<-held
	// Writes go on until the hard limit, then stop.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := wrote.Load()
		time.Sleep(300 * time.Millisecond)
		if wrote.Load() == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the writer did not stop with the checkpointer held back (%d writes)", wrote.Load())
		}
	}
	if size, bound := walSize(t, path), int64(hard+64*4)*(pageSize+24); size > bound {
		t.Errorf("WAL grew to %d bytes with the checkpointer held back, over %d", size, bound)
	}
	stopped := wrote.Load()
	if stopped >= 3000 {
		t.Fatal("every write went through: the hard limit was never reached")
	}
	close(release)
	<-done
	if n := wrote.Load(); n != 3000 {
		t.Fatalf("%d of 3000 writes after the checkpointer caught up", n)
	}
	t.Logf("stopped after %d writes; %d checkpoints", stopped, s.ckpt.bulk.Load())

	// Held back again, then closed while the writer waits.
	release = make(chan struct{})
	go func() {
		for range 3000 {
			if s.Update(context.Background(), func(tx store.Tx) error {
				_, err := tx.AppendAudit(context.Background(), store.AuditEntry{Time: time.Now(), Actor: "test", Action: "test.append", Target: "t", Result: "ok", Details: strings.Repeat("y", 2000)})
				return err
			}) != nil {
				return
			}
		}
	}()
	<-held
	time.Sleep(500 * time.Millisecond)
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("Close hung while the writer waited for the checkpointer")
	}
	close(release)
}
