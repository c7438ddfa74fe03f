package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshroot/meshroot/store"
)

// Leader election. The leader is the replica whose dedicated session holds
// the session-level advisory lock leaderLockKey. A session that ends, for
// whatever reason, releases the lock on the server; so a leader must stop
// its work before that can let another replica start its own. Two rules
// ensure it (docs/ha.md, "Leader election", has the timeline):
//
//  1. The leader runs a heartbeat on its session every HeartbeatEvery,
//     which must answer within HeartbeatTimeout and confirm the lock is
//     still held; when one fails, the Lease is lost at once and the work
//     is cancelled. The lock can only have been lost after the last
//     heartbeat that succeeded, so the old leader knows within
//     HeartbeatEvery + HeartbeatTimeout of losing it.
//  2. A replica that takes the lock waits TakeoverDelay (longer than
//     HeartbeatEvery + HeartbeatTimeout, plus time to cancel the work)
//     before Campaign returns, so the old leader has stopped by then.
//
// When the leader itself gives up (its heartbeat timed out but the session
// may be alive), it keeps the session, and the lock, until its work has
// stopped (Lease.Release) or releaseWait passed.

// leaderLockKey is the advisory lock of leadership: "meshrldr".
const leaderLockKey int64 = 0x6d6573686c726c64

// Election timing (variables for the tests; see the rules above).
var (
	HeartbeatEvery   = time.Second
	HeartbeatTimeout = time.Second
	TakeoverDelay    = 3 * time.Second
	// CampaignRetry is how often a follower tries the lock.
	CampaignRetry = time.Second
	releaseWait   = 10 * time.Second
)

// staleReplicas is how long a replica's row stays after its last heartbeat.
const staleReplicas = "1 day"

var _ store.Elector = (*Store)(nil)

// Campaign implements store.Elector: it records replica in the table
// replicas and tries the leadership lock every CampaignRetry until it gets
// it (then waits TakeoverDelay) or ctx ends. A lost session is replaced
// after CampaignRetry; other errors are returned (wrapping
// store.ErrRetryable when the database could not be reached).
func (s *Store) Campaign(ctx context.Context, replica string) (store.Lease, error) {
	for {
		l, err := s.campaignOnce(ctx, replica)
		switch {
		case err == nil:
			return l, nil
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case !errors.Is(err, store.ErrRetryable):
			return nil, fmt.Errorf("postgres store %s: leader election: %w", s.name, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(CampaignRetry):
		}
	}
}

// campaignOnce campaigns on one session until it wins, the session fails
// (an error) or ctx ends.
func (s *Store) campaignOnce(ctx context.Context, replica string) (store.Lease, error) {
	conn, err := s.dedicatedSession(ctx, "meshroot leader election")
	if err != nil {
		return nil, err
	}
	keep := false
	defer func() {
		if !keep {
			conn.Close(context.Background())
		}
	}()
	if _, err := conn.Exec(ctx, `INSERT INTO replicas (id, started_at, heartbeat_at, leader) VALUES ($1, now(), now(), false)
		ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), leader = false`, replica); err != nil {
		return nil, markLost(err)
	}
	for {
		var won bool
		if err := withTimeout(ctx, HeartbeatTimeout, func(ctx context.Context) error {
			return conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, leaderLockKey).Scan(&won)
		}); err != nil {
			return nil, markLost(err)
		}
		if won {
			break
		}
		if _, err := conn.Exec(ctx, `UPDATE replicas SET heartbeat_at = now(), leader = false WHERE id = $1`, replica); err != nil {
			return nil, markLost(err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(CampaignRetry):
		}
	}
	// Rule 2: let a leader that lost its session notice and stop, keeping
	// this session's heartbeat while waiting.
	for deadline := time.Now().Add(TakeoverDelay); time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(min(HeartbeatEvery, time.Until(deadline))):
		}
		if err := heartbeat(ctx, conn, replica, false); err != nil {
			return nil, err
		}
	}
	if err := withTimeout(ctx, HeartbeatTimeout, func(ctx context.Context) error {
		if _, err := conn.Exec(ctx, `UPDATE replicas SET leader = (id = $1), heartbeat_at = CASE WHEN id = $1 THEN now() ELSE heartbeat_at END`, replica); err != nil {
			return err
		}
		_, err := conn.Exec(ctx, `DELETE FROM replicas WHERE heartbeat_at < now() - interval '`+staleReplicas+`'`)
		return err
	}); err != nil {
		return nil, markLost(err)
	}
	keep = true
	l := &lease{conn: conn, replica: replica, lost: make(chan struct{}), release: make(chan struct{}), done: make(chan struct{})}
	go l.run()
	return l, nil
}

// heartbeat confirms, within HeartbeatTimeout, that conn's session is alive
// and holds the leadership lock, and records it.
func heartbeat(ctx context.Context, conn *pgx.Conn, replica string, leader bool) error {
	return withTimeout(ctx, HeartbeatTimeout, func(ctx context.Context) error {
		var held bool
		err := conn.QueryRow(ctx, `WITH l AS (
			SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
				AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = $1) AS held)
			UPDATE replicas SET heartbeat_at = now(), leader = $3 AND l.held FROM l WHERE id = $2 RETURNING l.held`,
			leaderLockKey, replica, leader).Scan(&held)
		if err != nil {
			return markLost(err)
		}
		if !held {
			return errors.New("the leadership lock is no longer held by this session")
		}
		return nil
	})
}

// withTimeout runs f with ctx bounded by d.
func withTimeout(ctx context.Context, d time.Duration, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return f(ctx)
}

// lease is the leadership held by conn's session.
type lease struct {
	conn    *pgx.Conn
	replica string
	lost    chan struct{} // closed when leadership ends
	release chan struct{} // closed by Release
	once    sync.Once
	done    chan struct{} // closed when the session is closed
	why     error         // why leadership ended, set before lost is closed
}

func (l *lease) Lost() <-chan struct{} { return l.lost }

// Err says why leadership ended (nil while it holds).
func (l *lease) Err() error {
	select {
	case <-l.lost:
		return l.why
	default:
		return nil
	}
}

// Release gives leadership up and waits until the session is closed (the
// lock released).
func (l *lease) Release() {
	l.once.Do(func() { close(l.release) })
	<-l.done
}

// run heartbeats until a heartbeat fails or Release, then ends leadership:
// Lost first, then (after Release, or releaseWait) the session.
func (l *lease) run() {
	defer close(l.done)
	defer l.conn.Close(context.Background())
	ctx := context.Background()
	var why error
	for why == nil {
		select {
		case <-l.release:
			why = errors.New("released")
		case <-time.After(HeartbeatEvery):
			if err := heartbeat(ctx, l.conn, l.replica, true); err != nil {
				why = fmt.Errorf("heartbeat failed: %w", err)
			}
		}
	}
	l.why = why
	close(l.lost)
	select {
	case <-l.release:
	case <-time.After(releaseWait):
	}
	if !l.conn.IsClosed() {
		_ = withTimeout(ctx, HeartbeatTimeout, func(ctx context.Context) error {
			_, err := l.conn.Exec(ctx, `UPDATE replicas SET leader = false WHERE id = $1`, l.replica)
			return err
		})
	}
}

// Replicas implements store.Elector.
func (s *Store) Replicas(ctx context.Context) ([]store.Replica, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, leader, started_at, heartbeat_at, now() FROM replicas ORDER BY id`)
	if err != nil {
		return nil, markLost(err)
	}
	defer rows.Close()
	var out []store.Replica
	for rows.Next() {
		var r store.Replica
		if err := rows.Scan(&r.ID, &r.Leader, &r.StartedAt, &r.Heartbeat, &r.Now); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, markLost(rows.Err())
}
