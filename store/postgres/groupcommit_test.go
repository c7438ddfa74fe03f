package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/postgres/pgtest"
)

// topXID returns the id of the top-level transaction st runs in (that of
// the whole batch, inside a savepoint).
func topXID(ctx context.Context, st store.Tx) (string, error) {
	var id string
	err := st.RootWriter.(*tx).q.QueryRow(ctx, `SELECT pg_current_xact_id()::text`).Scan(&id)
	return id, err
}

// burst runs n Updates at once, the first holding the writer for a moment
// so that the others queue up behind it and share transactions; fn(i)
// is the i-th Update's function. It returns each Update's error and panic.
func burst(s *Store, n int, fn func(i int, tx store.Tx) error) ([]error, []any) {
	ctx := context.Background()
	errs, panics := make([]error, n), make([]any, n)
	var wg sync.WaitGroup
	started := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { panics[i] = recover() }()
			if i > 0 {
				<-started
			}
			errs[i] = s.Update(ctx, func(tx store.Tx) error {
				if i == 0 {
					close(started)
					time.Sleep(300 * time.Millisecond)
				}
				return fn(i, tx)
			})
		}()
	}
	wg.Wait()
	return errs, panics
}

// TestGroupCommitIsolatesFailures: Updates that queue up share a
// transaction (fewer commits than Updates), and where every other one
// writes and then fails or panics, only the successful ones' writes land,
// each failure reaches its own caller, and the audit chain stays whole.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	s := openTest(t, dsn)
	ctx := t.Context()
	const n = 40
	errBoom := errors.New("boom")
	var txMu sync.Mutex
	txs := map[string]bool{}
	errs, panics := burst(s, n, func(i int, tx store.Tx) error {
		if err := tx.SetMeta(ctx, fmt.Sprintf("k%02d", i), "v"); err != nil {
			return err
		}
		if _, err := tx.AppendAudit(ctx, store.AuditEntry{Actor: "t", Action: "a", Target: fmt.Sprint(i), Result: "ok", Details: "{}"}); err != nil {
			return err
		}
		id, err := topXID(ctx, tx)
		if err != nil {
			return err
		}
		txMu.Lock()
		txs[id] = true
		txMu.Unlock()
		switch i % 4 {
		case 1:
			return errBoom
		case 3:
			panic(fmt.Sprintf("panic %d", i))
		}
		return nil
	})
	for i := range n {
		v, err := s.Meta(ctx, fmt.Sprintf("k%02d", i))
		if err != nil {
			t.Fatal(err)
		}
		switch i % 4 {
		case 1:
			if !errors.Is(errs[i], errBoom) || v != "" {
				t.Errorf("%d: Update = %v, key = %q; want boom and no key", i, errs[i], v)
			}
		case 3:
			if panics[i] != fmt.Sprintf("panic %d", i) || v != "" {
				t.Errorf("%d: panic %v, key = %q; want the panic and no key", i, panics[i], v)
			}
		default:
			if errs[i] != nil || v != "v" {
				t.Errorf("%d: Update = %v, key = %q; want nil and the key", i, errs[i], v)
			}
		}
	}
	list, err := s.ListAudit(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != n/2 {
		t.Errorf("%d audit rows, want %d (the successful Updates')", len(list), n/2)
	}
	if err := s.VerifyAudit(ctx); err != nil {
		t.Errorf("audit chain after group commits: %v", err)
	}
	if len(txs) > n/4 {
		t.Errorf("%d Updates ran in %d transactions: they did not share transactions", n, len(txs))
	}
}

// TestGroupCommitConnectionLoss: the connection of a shared transaction is
// lost in the middle: nothing of the batch lands, and each Update runs
// again in a transaction of its own, so every one lands exactly once.
func TestGroupCommitConnectionLoss(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	s := openTest(t, dsn)
	ctx := t.Context()
	const n = 20
	var killed atomic.Bool
	runs := make([]atomic.Int32, n)
	errs, panics := burst(s, n, func(i int, st store.Tx) error {
		runs[i].Add(1)
		if err := st.SetMeta(ctx, fmt.Sprintf("k%02d", i), "v"); err != nil {
			return err
		}
		if _, err := st.AppendAudit(ctx, store.AuditEntry{Actor: "t", Action: "a", Target: fmt.Sprint(i), Result: "ok", Details: "{}"}); err != nil {
			return err
		}
		if i == n/2 && killed.CompareAndSwap(false, true) {
			var pid uint32
			if err := st.RootWriter.(*tx).q.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
				return err
			}
			terminate(t, dsn, pid)
		}
		return nil
	})
	for i := range n {
		if errs[i] != nil || panics[i] != nil {
			t.Errorf("%d: Update = %v, panic %v; want nil", i, errs[i], panics[i])
		}
	}
	if !killed.Load() {
		t.Fatal("the connection was never terminated")
	}
	if runs[n/2].Load() < 2 {
		t.Errorf("the Update whose connection was lost ran %d times, want at least 2", runs[n/2].Load())
	}
	list, err := s.ListAudit(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != n {
		t.Errorf("%d audit rows, want %d: each Update exactly once", len(list), n)
	}
	if err := s.VerifyAudit(ctx); err != nil {
		t.Error(err)
	}
}
