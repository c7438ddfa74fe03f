// Package postgres is meshroot's store on PostgreSQL (13 or newer), for
// several meshroot servers sharing one database. It implements the same
// interfaces as the embedded SQLite store and passes the same conformance
// suite (store/storetest).
//
// # Transactions
//
// Reader methods of Store run one statement each, in autocommit (READ
// COMMITTED: each sees the last committed state). VerifyAudit reads the log
// and its head from one REPEATABLE READ snapshot.
//
// Update runs fn in a SERIALIZABLE transaction whose first statement takes
// an EXCLUSIVE lock on the table write_lock. Every writer, on every replica,
// takes that lock, so writers run one at a time across the fleet and fn's
// reads see every earlier commit: the audit chain stays one linear chain and
// a precondition fn checks still holds when it writes, exactly as with the
// single SQLite writer. SERIALIZABLE is the safety net for writes made
// without the lock (by hand, or by another program): PostgreSQL then aborts
// one of two conflicting transactions with a serialization failure, and
// Update runs fn again, up to maxAttempts times. fn may therefore run more
// than once: it must have no effects outside tx.
//
// The lock is released when the transaction ends, including when its
// connection is lost: PostgreSQL aborts the transaction of a closed session.
//
// # Failures
//
// When the connection is lost before the commit, nothing of the
// transaction landed: Update returns an error wrapping store.ErrRetryable.
// When it is lost while committing, Update asks the server, on a new
// connection, whether the transaction committed (pg_xact_status) and returns
// nil or store.ErrRetryable accordingly; when that cannot be known either,
// it says so and does not claim the error is retryable.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshroot/meshroot/store"
)

// Store is meshroot's state in a PostgreSQL database; Open hands it out as
// a store.Store. Release it with Close. It is safe for concurrent use, and several Stores
// (in one process or many) may share one database.
type Store struct {
	reader // Reader methods, on the pool, in autocommit
	gc     groupCommit

	pool *pgxpool.Pool
	name string // host:port/database, for messages; never the password
	feed feedState
}

var (
	_ store.Updater       = (*Store)(nil)
	_ store.AuditVerifier = (*Store)(nil)
)

// Tuning. lockTimeout bounds how long a write waits for the write lock (a
// replica whose transaction hangs holds it); idleInTxTimeout makes the
// server end a session that stays idle inside a transaction, so that a
// replica that stopped mid-transaction cannot hold the lock for long.
const (
	maxAttempts     = 8
	idleInTxTimeout = "60s"
)

// lockTimeout is a variable for the tests only.
var lockTimeout = "30s"

// IsDSN reports whether s names a PostgreSQL database (a postgres:// or
// postgresql:// URL) rather than a SQLite file.
func IsDSN(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// Open connects to the database dsn names (a postgres:// URL or key=value
// DSN, with libpq's parameters: sslmode, sslrootcert, sslcert, sslkey,
// connect_timeout, ..., and pool_max_conns) and brings its schema up to
// date under an advisory lock, so that replicas starting at once migrate it
// once. Open fails when the database was written by a newer meshroot.
func Open(ctx context.Context, dsn string) (store.Store, error) {
	s, err := open(ctx, dsn)
	if err != nil {
		return store.Store{}, err
	}
	return s.asStore(), nil
}

// OpenForCopy is Open, returning the PostgreSQL store itself: a copy into
// it needs CopyFrom, which is not part of store.Store.
func OpenForCopy(ctx context.Context, dsn string) (*Store, error) {
	return open(ctx, dsn)
}

// testTracer, set only by this package's benchmarks, sees every statement
// of the stores opened after it is set (it counts round trips).
var testTracer pgx.QueryTracer

// open is Open, returning the PostgreSQL store itself.
func open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's message may quote the DSN, password included.
		return nil, errors.New("postgres store: the DSN is not valid: expected postgres://USER@HOST:PORT/DATABASE?sslmode=... (see docs/ha.md)")
	}
	cc := cfg.ConnConfig
	name := fmt.Sprintf("%s:%d/%s", cc.Host, cc.Port, cc.Database)
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	for k, v := range map[string]string{"application_name": "meshroot", "idle_in_transaction_session_timeout": idleInTxTimeout} {
		if _, ok := cc.RuntimeParams[k]; !ok {
			cc.RuntimeParams[k] = v
		}
	}
	if err := migrate(ctx, cc, migrations); err != nil {
		return nil, fmt.Errorf("postgres store %s: %w", name, connectHint(err))
	}
	if testTracer != nil {
		cc.Tracer = testTracer
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres store %s: %w", name, connectHint(err))
	}
	s := &Store{pool: pool, name: name}
	s.reader = reader{q: poolQuerier{pool}}
	s.startWriter()
	return s, nil
}

// connectHint adds what to do to a connection error about TLS.
func connectHint(err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "server refused TLS connection"):
		return fmt.Errorf("%w: the DSN asks for TLS (sslmode=require, verify-ca or verify-full) but the server does not offer it: enable ssl on the server, or use sslmode=disable only on a trusted network", err)
	case strings.Contains(msg, "certificate"):
		return fmt.Errorf("%w: the server's TLS certificate was not accepted: give its CA with sslrootcert=FILE in the DSN", err)
	}
	return err
}

// Name returns the database's host:port/name, for messages and logs. It
// never holds a password.
func (s *Store) Name() string { return s.name }

// Redact returns dsn with any password replaced, for messages and audit.
func Redact(dsn string) string {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return "postgres (unparsable DSN)"
	}
	u := url.URL{Scheme: "postgres", Host: fmt.Sprintf("%s:%d", cfg.ConnConfig.Host, cfg.ConnConfig.Port), Path: "/" + cfg.ConnConfig.Database}
	if cfg.ConnConfig.User != "" {
		u.User = url.User(cfg.ConnConfig.User)
	}
	return u.String()
}

// Close closes the pool. It waits for connections in use to be released.
func (s *Store) Close() error {
	s.stopWriter()
	s.pool.Close()
	return nil
}

// Update runs fn in a transaction (see the package documentation): fn's
// writes land if it returns nil and are undone if it returns an error
// (which Update returns, wrapping store.ErrRetryable too when the
// connection was lost) or panics (the panic continues in the caller).
// A serialization failure or deadlock runs fn again, with a short random
// backoff, up to maxAttempts times. Updates that queue up while another is
// running share one transaction (group commit, see groupcommit.go).
func (s *Store) Update(ctx context.Context, fn func(tx store.Tx) error) error {
	return s.grouped(ctx, func(t *tx) error { return fn(t.asTx()) })
}

// update is Update, handing fn the transaction itself.
func (s *Store) update(ctx context.Context, fn func(t *tx) error) error {
	for attempt := 1; ; attempt++ {
		err := s.attempt(ctx, fn)
		if err == nil || !isSerializationFailure(err) {
			return err
		}
		if attempt == maxAttempts {
			return fmt.Errorf("postgres store %s: transaction abandoned after %d serialization failures: %w (%w)", s.name, attempt, err, store.ErrRetryable)
		}
		backoff := time.Duration(1<<min(attempt, 6)) * time.Millisecond
		select {
		case <-time.After(backoff/2 + rand.N(backoff)):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// beginWrite starts a write transaction and takes the write lock.
func beginWrite() string {
	return `BEGIN ISOLATION LEVEL SERIALIZABLE; SET LOCAL lock_timeout = '` + lockTimeout + `'; LOCK TABLE write_lock IN EXCLUSIVE MODE`
}

// attempt runs fn once in its own transaction.
func (s *Store) attempt(ctx context.Context, fn func(t *tx) error) (err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return s.lost("connect", err)
	}
	// The pool discards a connection that is closed or still in a
	// transaction, so a failed rollback cannot leak a transaction.
	defer conn.Release()
	c := conn.Conn()
	if _, err := c.Exec(ctx, beginWrite()); err != nil {
		rollback(c)
		return s.lost("begin transaction", err)
	}
	done := false
	defer func() {
		if !done { // fn panicked
			rollback(c)
		}
	}()
	ferr := fn(&tx{reader: reader{q: c}, head: &headCache{}})
	done = true
	if ferr != nil {
		rollback(c)
		switch {
		case ctx.Err() != nil:
		case c.IsClosed() || isConnectionLoss(ferr):
			return fmt.Errorf("%w (the connection to the database was lost, nothing of the transaction landed: %w)", ferr, store.ErrRetryable)
		case isLockTimeout(ferr):
			return fmt.Errorf("%w (a lock was held longer than %s, nothing of the transaction landed: %w)", ferr, lockTimeout, store.ErrRetryable)
		}
		return ferr
	}
	var xid *string
	if err := c.QueryRow(ctx, `SELECT pg_current_xact_id_if_assigned()::text`).Scan(&xid); err != nil {
		rollback(c)
		return s.lost("read transaction id", err)
	}
	tag, err := c.Exec(ctx, `COMMIT`)
	switch {
	case err == nil && tag.String() == "ROLLBACK":
		// The transaction had failed: a statement's error was ignored.
		return fmt.Errorf("postgres store %s: the transaction failed and was rolled back: a statement in it failed", s.name)
	case err == nil:
		return nil
	case isSerializationFailure(err):
		return err
	case xid == nil:
		return s.lost("commit", err) // read-only: nothing to lose
	}
	return s.commitOutcome(ctx, *xid, err)
}

// commitOutcome finds out, on a new connection, whether the transaction
// xid committed after its COMMIT failed with err.
func (s *Store) commitOutcome(ctx context.Context, xid string, err error) error {
	// The failed connection may still be finishing the commit.
	for range 20 {
		var status *string
		qerr := s.pool.QueryRow(ctx, `SELECT pg_xact_status($1::xid8)`, xid).Scan(&status)
		switch {
		case qerr != nil:
			return fmt.Errorf("postgres store %s: commit: %w; whether the transaction committed is unknown (checking failed: %v): check before retrying, for example with `meshroot audit list`", s.name, err, qerr)
		case status != nil && *status == "committed":
			return nil
		case status != nil && *status == "aborted":
			return s.lost("commit", err)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("postgres store %s: commit: %w; whether the transaction committed is unknown: %w", s.name, err, ctx.Err())
		}
	}
	return fmt.Errorf("postgres store %s: commit: %w; the transaction is still in progress on the server: check before retrying", s.name, err)
}

// lost wraps err from step; errors that mean the connection or the server
// went away (so the transaction did not land) also wrap store.ErrRetryable.
func (s *Store) lost(step string, err error) error {
	if isConnectionLoss(err) || isSerializationFailure(err) || isLockTimeout(err) {
		return fmt.Errorf("postgres store %s: %s: %w (nothing of the transaction landed: %w)", s.name, step, err, store.ErrRetryable)
	}
	return fmt.Errorf("postgres store %s: %s: %w", s.name, step, err)
}

// rollback ends the transaction on c, if c is still usable. A lost
// connection needs none: the server aborts its transaction.
func rollback(c *pgx.Conn) {
	if c.IsClosed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Exec(ctx, `ROLLBACK`); err != nil {
		_ = c.Close(ctx)
	}
}
