// Package sqlite is meshroot's embedded store: a single SQLite database file
// accessed through the pure Go driver modernc.org/sqlite (no cgo).
//
// # Concurrency
//
// A Store holds two connection pools on the same file, in WAL mode:
//
//   - a writer pool with exactly one connection. Every Update runs on it,
//     so in-process writers queue in database/sql (honouring their context)
//     instead of failing with SQLITE_BUSY. Transactions begin with BEGIN
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

	"github.com/meshroot/meshroot/plugins/store"
)

// driverName is the database/sql driver name modernc.org/sqlite registers.
const driverName = "sqlite"

// Store is a store.Store backed by a SQLite database file. Create it with
// Open and release it with Close. It is safe for concurrent use.
type Store struct {
	reader // Reader methods, on the reader pool

	path string
	w    *sql.DB // writer pool: one connection, BEGIN IMMEDIATE
	r    *sql.DB // reader pool: query-only connections
	// writeMu queues writers before the pool. database/sql hands a freed
	// connection to a random waiter, which under load gives some writers
	// very long waits; a sync.Mutex turns FIFO once a waiter has waited
	// 1 ms, which bounds the tail.
	writeMu sync.Mutex
}

var (
	_ store.Store         = (*Store)(nil)
	_ store.AuditVerifier = (*Store)(nil)
)

// Open opens the database file at path, creating it (and its parent
// directory, mode 0700) when missing, and brings its schema up to date.
// The database file is made mode 0600.
//
// Open fails when the database was written by a newer meshroot whose schema
// this one does not know.
func Open(ctx context.Context, path string) (*Store, error) {
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
	s.reader = reader{q: s.r}
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

// Update runs fn in one BEGIN IMMEDIATE transaction on the writer
// connection. The transaction is committed when fn returns nil and rolled
// back when fn returns an error (which Update returns unchanged) or panics
// (the panic continues after the rollback).
func (s *Store) Update(ctx context.Context, fn func(tx store.Tx) error) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	sqlTx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite store: begin transaction: %w", err)
	}
	finished := false
	defer func() {
		if !finished { // fn panicked
			_ = sqlTx.Rollback()
		}
	}()
	err = fn(&tx{reader: reader{q: sqlTx}})
	finished = true
	if err != nil {
		if rbErr := sqlTx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
			return errors.Join(err, fmt.Errorf("sqlite store: roll back: %w", rbErr))
		}
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("sqlite store: commit: %w", err)
	}
	return nil
}

// Close closes the database. It waits for queries in progress to finish.
func (s *Store) Close() error {
	var errs []error
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
