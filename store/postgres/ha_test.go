package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/postgres/pgtest"
)

// rawConn connects to dsn directly, bypassing the store, as another
// program (or an operator with psql) would.
func rawConn(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// Replicas starting at once against a new database: every Open succeeds
// and each migration is applied once. Without the advisory lock, two
// sessions creating the same tables at once fail on duplicate catalog rows.
func TestConcurrentOpenMigratesOnce(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	const replicas = 4
	var wg sync.WaitGroup
	errs := make([]error, replicas)
	start := make(chan struct{})
	for i := range replicas {
		wg.Go(func() {
			<-start
			s, err := Open(t.Context(), dsn)
			if err == nil {
				s.Close()
			}
			errs[i] = err
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
		}
	}
	rows, err := rawConn(t, dsn).Query(t.Context(), `SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct{ V, N int }])
	if err != nil {
		t.Fatal(err)
	}
	if len(versions) != len(migrations) {
		t.Fatalf("schema_migrations has %d versions, want %d", len(versions), len(migrations))
	}
	for i, v := range versions {
		if v.V != i+1 || v.N != 1 {
			t.Errorf("schema_migrations row %d: version %d recorded %d times, want version %d once", i, v.V, v.N, i+1)
		}
	}
}

// Several replicas (separate stores, separate pools) append to the audit
// log at once: the log is one chain, seq 1..N without gaps or forks, every
// entry once, and the store's verification passes.
func TestAuditChainLinearAcrossPools(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	const replicas, writers, each = 3, 4, 15
	stores := make([]*Store, replicas)
	for i := range stores {
		stores[i] = openTest(t, dsn)
	}
	var wg sync.WaitGroup
	for r, s := range stores {
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					err := s.Update(t.Context(), func(tx store.Tx) error {
						_, err := tx.AppendAudit(t.Context(), store.AuditEntry{
							Actor: fmt.Sprintf("replica%d/writer%d", r, w), Action: "test.append", Target: fmt.Sprint(i), Result: "ok", Details: "{}",
						})
						return err
					})
					if err != nil {
						t.Errorf("replica %d writer %d append %d: %v", r, w, i, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	check := openTest(t, dsn)
	n, err := check.VerifyAuditRows(t.Context())
	if err != nil {
		t.Fatalf("VerifyAuditRows: %v", err)
	}
	const total = replicas * writers * each
	if n != total {
		t.Fatalf("VerifyAuditRows checked %d rows, want %d", n, total)
	}
	list, err := check.ListAudit(t.Context(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	seen, prevs := map[string]bool{}, map[string]bool{}
	for i, e := range list {
		if e.Seq != int64(i+1) {
			t.Fatalf("entry %d has seq %d: gap or duplicate", i, e.Seq)
		}
		if key := e.Actor + "/" + e.Target; seen[key] {
			t.Errorf("entry %s appended twice", key)
		} else {
			seen[key] = true
		}
		if prevs[e.PrevHash] {
			t.Errorf("seq %d: another entry already follows %s: the chain forked", e.Seq, e.PrevHash)
		}
		prevs[e.PrevHash] = true
	}
	if err := store.VerifyChain(list, nil); err != nil {
		t.Fatal(err)
	}
}

// backendPID returns the server process of the transaction behind tx.
func backendPID(t *testing.T, st store.Tx) uint32 {
	t.Helper()
	return st.RootWriter.(*tx).q.(*pgx.Conn).PgConn().PID()
}

// terminate ends the server process pid from another connection, as an
// administrator, a failover or a crash would, and waits until it is gone.
func terminate(t *testing.T, dsn string, pid uint32) {
	t.Helper()
	c := rawConn(t, dsn)
	var ok bool
	if err := c.QueryRow(t.Context(), `SELECT pg_terminate_backend($1, 10000)`, int32(pid)).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, ok, err)
	}
}

// A connection lost in the middle of a transaction: nothing of it lands,
// the error wraps store.ErrRetryable, and the store goes on working.
func TestConnectionLossMidTransaction(t *testing.T) {
	for _, tc := range []struct {
		name string
		// after runs once the backend is gone; its error is fn's.
		after func(ctx context.Context, tx store.Tx) error
	}{
		{"NextStatementFails", func(ctx context.Context, tx store.Tx) error {
			return tx.SetMeta(ctx, "after", "the loss")
		}},
		{"FnSucceedsCommitFails", func(context.Context, store.Tx) error { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dsn := pgtest.NewDatabase(t)
			s := openTest(t, dsn)
			ctx := t.Context()
			err := s.Update(ctx, func(tx store.Tx) error {
				if err := writeSome(ctx, tx); err != nil {
					return err
				}
				terminate(t, dsn, backendPID(t, tx))
				return tc.after(ctx, tx)
			})
			if !errors.Is(err, store.ErrRetryable) {
				t.Fatalf("Update after the connection was lost = %v, want an error wrapping store.ErrRetryable", err)
			}
			if _, err := s.GetRoot(ctx, "r1"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("GetRoot after the lost transaction: %v, want ErrNotFound (nothing may land)", err)
			}
			if v, err := s.Meta(ctx, "before"); err != nil || v != "" {
				t.Errorf("Meta(before) = %q, %v; want nothing landed", v, err)
			}
			if list, err := s.ListAudit(ctx, 0, 0); err != nil || len(list) != 0 {
				t.Errorf("ListAudit = %d entries, %v; want none", len(list), err)
			}
			// The pool replaced the connection: the same writes now land.
			if err := s.Update(ctx, func(tx store.Tx) error { return writeSome(ctx, tx) }); err != nil {
				t.Fatalf("Update after recovery: %v", err)
			}
			if err := s.VerifyAudit(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// writeSome writes a root, a meta key and an audit entry.
func writeSome(ctx context.Context, tx store.Tx) error {
	if err := tx.CreateRoot(ctx, store.Root{ID: "r1", TrustDomain: "example.org", State: store.RootActive, KeyRef: "k", ChainPEM: []byte("c"), NotAfter: time.Now().Add(time.Hour), CreatedAt: time.Now()}); err != nil {
		return err
	}
	if err := tx.SetMeta(ctx, "before", "the loss"); err != nil {
		return err
	}
	_, err := tx.AppendAudit(ctx, store.AuditEntry{Actor: "test", Action: "test.write", Result: "ok", Details: "{}"})
	return err
}

// A writer outside meshroot (no write lock) changes a row the store's
// transaction then writes: PostgreSQL aborts the store's transaction with a
// serialization failure, and Update runs fn again, which then succeeds.
func TestSerializationFailureRetried(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	s := openTest(t, dsn)
	ctx := t.Context()
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.SetMeta(ctx, "k", "v0") }); err != nil {
		t.Fatal(err)
	}
	other := rawConn(t, dsn)
	if _, err := other.Exec(ctx, `BEGIN; UPDATE meta SET value = 'other' WHERE key = 'k'`); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- s.Update(ctx, func(tx store.Tx) error {
			calls.Add(1)
			return tx.SetMeta(ctx, "k", "store")
		})
	}()
	// Wait until the store's transaction waits for the other's row lock.
	waitFor(t, "the store's write to wait for the row lock", func() bool {
		var n int
		err := rawConn(t, dsn).QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = 'meshroot' AND wait_event_type = 'Lock'`).Scan(&n)
		return err == nil && n == 1
	})
	if _, err := other.Exec(ctx, `COMMIT`); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Update: %v", err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("fn ran %d times, want 2 (once aborted by the serialization failure, once committed)", n)
	}
	if v, _ := s.Meta(ctx, "k"); v != "store" {
		t.Errorf("Meta(k) = %q, want the retried write %q", v, "store")
	}
}

// Retries are bounded: a transaction that keeps failing gives up with
// store.ErrRetryable after maxAttempts runs.
func TestSerializationRetriesBounded(t *testing.T) {
	s := openTest(t, pgtest.NewDatabase(t))
	calls := 0
	err := s.Update(t.Context(), func(store.Tx) error {
		calls++
		return fmt.Errorf("write: %w", &pgconn.PgError{Code: codeSerializationFailure, Message: "could not serialize access"})
	})
	if !errors.Is(err, store.ErrRetryable) || calls != maxAttempts {
		t.Fatalf("Update = %v after %d runs; want store.ErrRetryable after %d", err, calls, maxAttempts)
	}
}

// A commit whose connection broke is resolved by asking the server about
// the transaction id: committed is success, aborted is retryable.
func TestCommitOutcome(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	s := openTest(t, dsn)
	ctx := t.Context()
	xact := func(end string) string {
		c := rawConn(t, dsn)
		var xid string
		if _, err := c.Exec(ctx, `BEGIN`); err != nil {
			t.Fatal(err)
		}
		if err := c.QueryRow(ctx, `SELECT pg_current_xact_id()::text`).Scan(&xid); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, `INSERT INTO meta VALUES ('x`+xid+`', '');`+end); err != nil {
			t.Fatal(err)
		}
		return xid
	}
	lostErr := errors.New("connection reset while committing")
	if err := s.commitOutcome(ctx, xact("COMMIT"), lostErr); err != nil {
		t.Errorf("committed transaction: %v, want nil", err)
	}
	if err := s.commitOutcome(ctx, xact("ROLLBACK"), lostErr); !errors.Is(err, lostErr) {
		t.Errorf("aborted transaction: %v, want the commit's error", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A writer that holds the write lock too long (a hung replica) makes the
// others' writes fail as retryable after lockTimeout, not wait forever.
func TestWriteLockTimeoutRetryable(t *testing.T) {
	defer func(old string) { lockTimeout = old }(lockTimeout)
	lockTimeout = "300ms"
	dsn := pgtest.NewDatabase(t)
	s := openTest(t, dsn)
	hung := rawConn(t, dsn)
	if _, err := hung.Exec(t.Context(), `BEGIN; LOCK TABLE write_lock IN EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	err := s.Update(t.Context(), func(tx store.Tx) error { return tx.SetMeta(t.Context(), "k", "v") })
	if !errors.Is(err, store.ErrRetryable) {
		t.Fatalf("Update while another session holds the write lock = %v, want store.ErrRetryable", err)
	}
	if _, err := hung.Exec(t.Context(), `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(t.Context(), func(tx store.Tx) error { return tx.SetMeta(t.Context(), "k", "v") }); err != nil {
		t.Fatalf("Update once the lock is free: %v", err)
	}
}
