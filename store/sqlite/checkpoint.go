package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"

	"modernc.org/sqlite"
)

// Checkpoints.
//
// In WAL mode every commit appends the pages it changed to the -wal file. A
// checkpoint copies them back into the database file and syncs it; once
// every frame is copied, the next write starts the WAL over. SQLite's
// automatic checkpoint does all of that inside the commit that takes the WAL
// past 1,000 pages, on the committing connection: the Updates of that batch
// and every Update queued behind it wait for ~4 MB to be copied and synced.
//
// The store splits the job. The writer connection runs with
// wal_autocheckpoint(0) and counts the pages its commits write. Past
// checkpointPages it wakes the checkpointer, which copies the bulk on its own
// connection while the writer goes on committing. When that is done, the
// writer copies what was appended meanwhile, between two batches or at once
// when idle, so that the WAL can start over. Should the checkpointer fall
// behind, the writer waits for it once the WAL holds walHardPages since the
// last checkpoint: the WAL stays bounded, as with SQLite's own.
const (
	// checkpointPages is the number of pages written since the last
	// checkpoint that starts one: SQLite's default wal_autocheckpoint.
	checkpointPages = 1000
	// walHardPages is where the writer stops committing until the
	// checkpoint it asked for is done.
	walHardPages = 8 * checkpointPages
)

// checkpointParams are the DSN parameters of the checkpointer's connection.
// A checkpoint copies pages into the database file, so it is not query-only.
const checkpointParams = "_pragma=busy_timeout(5000)&_pragma=synchronous(FULL)"

// checkpointer is the writer goroutine's side of the checkpoints. Only the
// writer goroutine touches its fields; the channels reach the checkpointer
// goroutine (run).
type checkpointer struct {
	db *sql.DB // one connection, the checkpointer's own
	// hard and soft are walHardPages and checkpointPages (tests lower them).
	soft, hard int
	// pages counts the WAL's frames not yet copied, as far as the writer
	// knows: those its commits wrote since the last checkpoint, plus those
	// that checkpoint had to leave for a reader.
	pages int
	// asked is set from waking the checkpointer until the writer has
	// finished its checkpoint.
	asked  bool
	wake   chan struct{} // to the checkpointer: copy the bulk
	done   chan struct{} // from the checkpointer: the bulk is copied
	exited chan struct{} // closed when the checkpointer goroutine returns
	// bulk counts the checkpoints, finished those that reached the end of
	// the WAL (tests).
	bulk, finished atomic.Int64
	// beforeBulk, when set, runs before each of the checkpointer's copies
	// (tests: a checkpointer that falls behind).
	beforeBulk func()
}

func newCheckpointer(db *sql.DB) *checkpointer {
	return &checkpointer{
		db: db, soft: checkpointPages, hard: walHardPages,
		wake: make(chan struct{}, 1), done: make(chan struct{}, 1), exited: make(chan struct{}),
	}
}

// run copies the WAL into the database file each time the writer asks,
// until closing is closed.
func (c *checkpointer) run(closing <-chan struct{}) {
	defer close(c.exited)
	for {
		select {
		case <-c.wake:
		case <-closing:
			return
		}
		if c.beforeBulk != nil {
			c.beforeBulk()
		}
		// A failure is left to the writer's own checkpoint, which follows;
		// a disk that fails here fails the next commit too.
		_, _, _ = walCheckpoint(context.Background(), c.db)
		select {
		case c.done <- struct{}{}:
		default:
		}
	}
}

// walCheckpoint runs a passive checkpoint on db: it copies the frames that
// no reader still needs and never waits for a lock. It returns the frames
// in the WAL and how many of them are now in the database file.
func walCheckpoint(ctx context.Context, db *sql.DB) (frames, copied int, err error) {
	var busy int
	err = db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &copied)
	if err != nil {
		return 0, 0, fmt.Errorf("sqlite store: checkpoint: %w", err)
	}
	return frames, copied, nil
}

// afterBatch runs on the writer goroutine after each batch: it counts the
// pages the batch wrote and asks for, finishes or waits for a checkpoint.
func (s *Store) afterBatch() {
	c := s.ckpt
	c.pages += s.pagesWritten()
	switch {
	case c.asked && c.pages >= c.hard:
		select { // the WAL may grow no further
		case <-c.done:
			s.finishCheckpoint()
		case <-s.closing:
		}
	case c.asked:
		select {
		case <-c.done:
			s.finishCheckpoint()
		default:
		}
	case c.pages >= c.soft:
		c.asked = true
		c.wake <- struct{}{} // cannot block: asked was false, so wake is empty
	}
}

// finishCheckpoint copies, on the writer connection and between
// transactions, the frames appended since the checkpointer started: with no
// writer in the way it can reach the end of the WAL, and the next write then
// starts the WAL over.
func (s *Store) finishCheckpoint() {
	c := s.ckpt
	c.asked = false
	c.bulk.Add(1)
	frames, copied, err := walCheckpoint(context.Background(), s.w)
	if err != nil {
		return // retried after the next checkpointPages pages
	}
	// Frames a reader still needed stay: they count towards the next one.
	c.pages = frames - copied
	if c.pages == 0 {
		c.finished.Add(1)
	}
}

// pagesWritten returns the pages the writer connection has written to the
// WAL since the last call (SQLITE_DBSTATUS_CACHE_WRITE, reset on read).
func (s *Store) pagesWritten() int {
	ctx := context.Background()
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return 0
	}
	defer conn.Close()
	n := 0
	_ = conn.Raw(func(dc any) error {
		st, ok := dc.(sqlite.DBStatus)
		if !ok {
			return nil
		}
		cur, _, err := st.Status(sqlite.DBStatusCacheWrite, true)
		if err == nil {
			n = cur
		}
		return nil
	})
	return n
}
