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

// TestGroupCommitLockTimeout: while another session holds the write lock
// too long, queued Updates fail as retryable, none of their functions
// having run, and once it is free they land.
func TestGroupCommitLockTimeout(t *testing.T) {
	defer func(old string) { lockTimeout = old }(lockTimeout)
	lockTimeout = "300ms"
	dsn := pgtest.NewDatabase(t)
	s := openTest(t, dsn)
	ctx := t.Context()
	hung := rawConn(t, dsn)
	if _, err := hung.Exec(ctx, `BEGIN; LOCK TABLE write_lock IN EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	const n = 10
	var ran atomic.Int32
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Update(ctx, func(tx store.Tx) error {
				ran.Add(1)
				return tx.SetMeta(ctx, fmt.Sprintf("k%d", i), "v")
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, store.ErrRetryable) {
			t.Errorf("%d: Update while another session holds the write lock = %v, want store.ErrRetryable", i, err)
		}
	}
	if r := ran.Load(); r != 0 {
		t.Errorf("%d functions ran without the write lock", r)
	}
	if _, err := hung.Exec(ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	_, _ = burst(s, n, func(i int, tx store.Tx) error { return tx.SetMeta(ctx, fmt.Sprintf("k%d", i), "v") })
	for i := range n {
		if v, err := s.Meta(ctx, fmt.Sprintf("k%d", i)); err != nil || v != "v" {
			t.Errorf("k%d = %q, %v once the lock is free; want v", i, v, err)
		}
	}
}

// TestGroupCommitIgnoredStatementError: a function that ignores a failed
// statement and returns nil gets an error, its writes are undone, and the
// others of its batch land.
func TestGroupCommitIgnoredStatementError(t *testing.T) {
	s := openTest(t, pgtest.NewDatabase(t))
	ctx := t.Context()
	const n, bad = 10, 5
	errs, panics := burst(s, n, func(i int, st store.Tx) error {
		if err := st.SetMeta(ctx, fmt.Sprintf("k%d", i), "v"); err != nil {
			return err
		}
		if i == bad {
			_, _ = st.RootWriter.(*tx).q.Exec(ctx, `SELECT 1/0`) // error ignored
		}
		return nil
	})
	for i := range n {
		v, err := s.Meta(ctx, fmt.Sprintf("k%d", i))
		if err != nil || panics[i] != nil {
			t.Fatal(err, panics[i])
		}
		if i == bad {
			if errs[i] == nil || v != "" {
				t.Errorf("%d: Update = %v, key = %q; want an error and no key", i, errs[i], v)
			}
		} else if errs[i] != nil || v != "v" {
			t.Errorf("%d: Update = %v, key = %q; want nil and the key", i, errs[i], v)
		}
	}
}
