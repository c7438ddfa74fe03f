// Package sqlite is meshroot's embedded store: a single SQLite database file
// accessed through the pure Go driver modernc.org/sqlite (no cgo).
//
// # Concurrency
//
// A Store holds two connection pools on the same file, in WAL mode:
//
//   - a writer pool with exactly one connection, used by one writer
//     goroutine that runs Updates in arrival order, batching those that
//     queue up into one transaction (group commit, see Update), so
//     in-process writers never fail with SQLITE_BUSY. Transactions begin with BEGIN
//     IMMEDIATE, so a writer in another process (the CLI next to a running
//     server) is made to wait by busy_timeout before it reads anything,
//     never in the middle of a transaction.
//   - a reader pool with a few query-only connections, used by the Reader
//     methods of Store. WAL lets them read the last committed state while a
//     write is in progress, so a slow Update does not stall reads.
//
// Reads made through the Store inside an Update's fn do not see that Update's
// uncommitted writes: use the Tx passed to fn. fn must not call Update on the
// same Store: it would wait for the writer connection that it holds.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/meshroot/meshroot/store"
)

// driverName is the database/sql driver name modernc.org/sqlite registers.
const driverName = "sqlite"

// Store is meshroot's state in a SQLite database file; Open hands it out as
// a store.Store. Release it with Close. It is safe for concurrent use.
type Store struct {
	reader // Reader methods, on the reader pool

	path string
	w    *sql.DB // writer pool: one connection, BEGIN IMMEDIATE
	r    *sql.DB // reader pool: query-only connections
	// wc and rc hold the prepared statements of w and r.
	wc, rc *stmtCache
	// writes queues Updates, in arrival order, for the one writer goroutine
	// (database/sql would hand the writer connection to a random waiter).
	writes     chan *writeReq
	closing    chan struct{}
	closeOnce  sync.Once
	writerDone chan struct{}
}

// Open opens the database file at path, creating it (and its parent
// directory, mode 0700) when missing, and brings its schema up to date.
// The database file is made mode 0600.
//
// Open fails when the database was written by a newer meshroot whose schema
// this one does not know.
func Open(ctx context.Context, path string) (store.Store, error) {
	s, err := open(ctx, path)
	if err != nil {
		return store.Store{}, err
	}
	return s.asStore(), nil
}

// open is Open, returning the SQLite store itself.
func open(ctx context.Context, path string) (*Store, error) {
	abs, err := prepareFiles(path)
	if err != nil {
		return nil, err
	}
	s := &Store{path: abs}
	if s.w, err = openPool(ctx, abs, writerParams, 1); err != nil {
		return nil, fmt.Errorf("sqlite store %q: open: %w", abs, err)
	}
	if err := checkWAL(ctx, s.w); err != nil {
		s.w.Close()
		return nil, fmt.Errorf("sqlite store %q: %w", abs, err)
	}
	if err := migrate(ctx, s.w, migrations); err != nil {
		s.w.Close()
		return nil, fmt.Errorf("sqlite store %q: %w", abs, err)
	}
	if s.r, err = openPool(ctx, abs, readerParams, readerConns); err != nil {
		s.w.Close()
		return nil, fmt.Errorf("sqlite store %q: open: %w", abs, err)
	}
	// WAL mode has created the -wal and -shm files by now.
	if err := restrictFiles(abs); err != nil {
		s.Close()
		return nil, err
	}
	s.wc, s.rc = newStmtCache(s.w, true), newStmtCache(s.r, false)
	s.reader = reader{q: cachedDB{db: s.r, cache: s.rc}}
	s.writes, s.closing, s.writerDone = make(chan *writeReq), make(chan struct{}), make(chan struct{})
	go s.writer()
	return s, nil
}

// openPool opens a database/sql pool on path with the given DSN parameters
// and at most conns connections, and checks that a connection can be made.
func openPool(ctx context.Context, path, params string, conns int) (*sql.DB, error) {
	db, err := sql.Open(driverName, path+"?"+params)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// checkWAL fails unless the database is in WAL mode, which the reader pool
// relies on to read while a write is in progress.
func checkWAL(ctx context.Context, db *sql.DB) error {
	var mode string
	if err := db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return fmt.Errorf("read journal mode: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal mode is %q, not WAL: the database file or its directory may not support WAL (a network file system?); keep the database on a local disk", mode)
	}
	return nil
}

// maxBatch bounds how many Updates share one transaction.
const maxBatch = 64

// writeReq is one Update waiting for the writer.
type writeReq struct {
	ctx  context.Context
	fn   func(tx store.Tx) error
	done chan writeResult
}

type writeResult struct {
	err      error
	panicked bool
	panicVal any
}

// errClosed is returned by Update on a closed Store.
var errClosed = errors.New("sqlite store: closed")

// Update runs fn in a transaction on the writer connection: fn's writes
// land if it returns nil and are undone if it returns an error (which
// Update returns unchanged) or panics (the panic continues in the caller).
//
// Group commit: Updates that arrive while the writer is busy run together
// in one BEGIN IMMEDIATE transaction, each inside its own SAVEPOINT so that
// one failing fn undoes only its own writes, and are committed (and
// fsync'd) once. Update returns after that commit; if the commit fails,
// every Update of the batch gets the error.
func (s *Store) Update(ctx context.Context, fn func(tx store.Tx) error) error {
	req := &writeReq{ctx: ctx, fn: fn, done: make(chan writeResult, 1)}
	select {
	case s.writes <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closing:
		return errClosed
	}
	res := <-req.done
	if res.panicked {
		panic(res.panicVal)
	}
	return res.err
}

// writer runs batches of Updates, in arrival order, until the store closes.
func (s *Store) writer() {
	defer close(s.writerDone)
	for {
		var first *writeReq
		select {
		case first = <-s.writes:
		case <-s.closing:
			return
		}
		// Statements first asked for by the last batch are prepared while
		// the connection is free (see stmtCache.deferred).
		s.wc.preparePending(context.Background())
		batch := []*writeReq{first}
	drain:
		for len(batch) < maxBatch {
			select {
			case r := <-s.writes:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		s.runBatch(batch)
	}
}

func (s *Store) runBatch(batch []*writeReq) {
	results := make([]writeResult, len(batch))
	finish := func() {
		for i, r := range batch {
			r.done <- results[i]
		}
	}
	defer finish()
	// The transaction outlives any one request's context: a request whose
	// context ends is skipped or fails on its own statements.
	sqlTx, err := s.w.BeginTx(context.Background(), nil)
	if err != nil {
		for i := range results {
			results[i].err = fmt.Errorf("sqlite store: begin transaction: %w", err)
		}
		return
	}
	q := cachedTx{tx: sqlTx, cache: s.wc}
	ran := false
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			results[i].err = err
			continue
		}
		if _, err := q.ExecContext(context.Background(), `SAVEPOINT w`); err != nil {
			results[i].err = fmt.Errorf("sqlite store: savepoint: %w", err)
			continue
		}
		results[i] = runFn(r, q)
		if results[i].err != nil || results[i].panicked {
			if _, err := q.ExecContext(context.Background(), `ROLLBACK TO w`); err != nil {
				// The transaction is in an unknown state: give up on all.
				_ = sqlTx.Rollback()
				for j := range results {
					if results[j].err == nil && !results[j].panicked {
						results[j].err = fmt.Errorf("sqlite store: roll back to savepoint: %w", err)
					}
				}
				return
			}
		}
		if _, err := q.ExecContext(context.Background(), `RELEASE w`); err != nil {
			results[i].err = errors.Join(results[i].err, fmt.Errorf("sqlite store: release savepoint: %w", err))
		}
		ran = ran || (results[i].err == nil && !results[i].panicked)
	}
	if !ran {
		_ = sqlTx.Rollback()
		return
	}
	if err := sqlTx.Commit(); err != nil {
		for i := range results {
			if results[i].err == nil && !results[i].panicked {
				results[i].err = fmt.Errorf("sqlite store: commit: %w", err)
			}
		}
	}
}

// runFn runs one request's fn, catching a panic so that the batch goes on.
func runFn(r *writeReq, q querier) (res writeResult) {
	defer func() {
		if p := recover(); p != nil {
			res = writeResult{panicked: true, panicVal: p}
		}
	}()
	return writeResult{err: r.fn((&tx{reader: reader{q: q}}).asTx())}
}

// Close closes the database. It waits for queries in progress to finish.
func (s *Store) Close() error {
	if s.closing != nil {
		s.closeOnce.Do(func() { close(s.closing) })
		<-s.writerDone
	}
	var errs []error
	if s.rc != nil {
		s.rc.close()
		s.wc.close()
	}
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sqlite store %q: close: %w", s.path, err)
	}
	return nil
}
