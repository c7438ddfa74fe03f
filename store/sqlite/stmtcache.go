package sqlite

import (
	"context"
	"database/sql"
	"sync"
)

// maxCachedStmts bounds how many distinct queries a stmtCache keeps
// prepared; queries beyond it run unprepared. The store's queries are
// constant strings (a few dozen), so the bound only guards against a
// future caller building queries from data.
const maxCachedStmts = 256

// stmtCache keeps one prepared statement per query text for a pool.
// SQLite parses and plans a query on every unprepared call, which was the
// largest single cost of an issuance (about a fifth of its CPU); a
// prepared statement is parsed once per connection (database/sql prepares
// it on each connection on first use there and keeps it).
type stmtCache struct {
	db *sql.DB
	// deferred: a query missing from the cache is not prepared at once but
	// queued for preparePending. The writer pool has one connection, which
	// the transaction asking for the statement holds: preparing on the
	// pool then would wait for it forever.
	deferred bool
	mu       sync.Mutex
	m        map[string]*sql.Stmt
	pending  map[string]bool
}

func newStmtCache(db *sql.DB, deferred bool) *stmtCache {
	return &stmtCache{db: db, deferred: deferred, m: make(map[string]*sql.Stmt), pending: make(map[string]bool)}
}

// get returns the prepared statement for query, or nil when there is none
// yet (deferred), it cannot be prepared (the caller then runs the query
// unprepared, which reports any error in the query the usual way) or the
// cache is full.
func (c *stmtCache) get(ctx context.Context, query string) *sql.Stmt {
	c.mu.Lock()
	st, ok := c.m[query]
	full := len(c.m)+len(c.pending) >= maxCachedStmts
	if !ok && !full && c.deferred {
		c.pending[query] = true
	}
	c.mu.Unlock()
	if ok || full || c.deferred {
		return st
	}
	return c.prepare(ctx, query)
}

// prepare prepares query on the pool and caches it.
func (c *stmtCache) prepare(ctx context.Context, query string) *sql.Stmt {
	st, err := c.db.PrepareContext(ctx, query)
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, query)
	if err != nil {
		c.m[query] = nil // run unprepared from now on
		return nil
	}
	if prev := c.m[query]; prev != nil { // prepared concurrently
		st.Close()
		return prev
	}
	c.m[query] = st
	return st
}

// preparePending prepares the queries that deferred gets asked for. The
// writer calls it between transactions, when its connection is free.
func (c *stmtCache) preparePending(ctx context.Context) {
	c.mu.Lock()
	queries := make([]string, 0, len(c.pending))
	for q := range c.pending {
		queries = append(queries, q)
	}
	c.mu.Unlock()
	for _, q := range queries {
		c.prepare(ctx, q)
	}
}

// close closes every cached statement.
func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for q, st := range c.m {
		if st != nil {
			st.Close()
		}
		delete(c.m, q)
	}
}

// cachedDB is a querier on a pool that runs each query through its
// prepared statement.
type cachedDB struct {
	db    *sql.DB
	cache *stmtCache
}

// ExecContext runs query's prepared statement.
func (d cachedDB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := d.cache.get(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return d.db.ExecContext(ctx, query, args...)
}

// QueryContext runs query's prepared statement.
func (d cachedDB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := d.cache.get(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return d.db.QueryContext(ctx, query, args...)
}

// QueryRowContext runs query's prepared statement.
func (d cachedDB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := d.cache.get(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return d.db.QueryRowContext(ctx, query, args...)
}

// cachedTx is a querier on a write transaction that runs each query
// through the writer pool's prepared statement, bound to the transaction
// (database/sql reuses the statement already prepared on the writer's one
// connection).
type cachedTx struct {
	tx    *sql.Tx
	cache *stmtCache
}

// ExecContext runs query's prepared statement in the transaction.
func (t cachedTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := t.cache.get(ctx, query); st != nil {
		return t.tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return t.tx.ExecContext(ctx, query, args...)
}

// QueryContext runs query's prepared statement in the transaction.
func (t cachedTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := t.cache.get(ctx, query); st != nil {
		return t.tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, query, args...)
}

// QueryRowContext runs query's prepared statement in the transaction.
func (t cachedTx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := t.cache.get(ctx, query); st != nil {
		return t.tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, query, args...)
}
