package postgres

import (
	"context"
	"net"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshroot/meshroot/store"
)

// The change feed. Triggers on the tables that make up what agents watch
// (roots, intermediates, federated bundles, CRLs, revocations, meta but
// the audit head, which every audited write moves: see the migration
// "change notifications and replicas") run pg_notify inside
// the writing transaction, so PostgreSQL delivers the notification when,
// and only if, that transaction commits; several in one transaction are
// delivered once. Each Store's listener holds one dedicated session that
// LISTENs on changeChannel and turns every notification into a value on
// the channel Changes returns.
//
// A notification sent while the listener is disconnected is lost. The
// listener therefore signals once after every (re)connection, and its
// consumers poll as well (server.ServerConfig.BundlePoll): the poll is the
// safety net, the notification the fast path.

// changeChannel is the LISTEN/NOTIFY channel of committed changes.
const changeChannel = "meshroot_changes"

var _ store.ChangeFeed = (*Store)(nil)

// ListenRetry is the wait before the listener reconnects after its session
// failed (a variable for the tests).
var ListenRetry = time.Second

// sessionKeepAlive makes both ends of a dedicated session (listener,
// leader election) notice a peer that vanished without closing the
// connection within about 10 s + 3 × 3 s, even while it only waits: this
// process by its socket options, the server by the session's
// tcp_keepalives_* settings (sessionKeepAliveParams). Without them the
// server would keep a partitioned leader's session, and its lock, for the
// operating system's default of two hours.
var sessionKeepAlive = net.KeepAliveConfig{Enable: true, Idle: 10 * time.Second, Interval: 3 * time.Second, Count: 3}

var sessionKeepAliveParams = map[string]string{"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "3", "tcp_keepalives_count": "3"}

// feedState is what the listener reports about itself, for tests.
type feedState struct {
	listening atomic.Bool
	pid       atomic.Uint32 // the listening session's backend PID
	connects  atomic.Int64
}

// Changes implements store.ChangeFeed with LISTEN on a dedicated session,
// reconnecting after ListenRetry when it fails, until ctx ends.
func (s *Store) Changes(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	retry := ListenRetry
	go func() {
		defer close(out)
		for ctx.Err() == nil {
			_ = s.listenOnce(ctx, out)
			s.feed.listening.Store(false)
			select {
			case <-ctx.Done():
			case <-time.After(retry):
			}
		}
	}()
	return out
}

// Listening reports whether the change feed's session is up, and its
// backend PID (for tests that end it with pg_terminate_backend).
func (s *Store) Listening() (bool, uint32) {
	return s.feed.listening.Load(), s.feed.pid.Load()
}

// listenOnce opens a session, LISTENs, signals out once (changes may have
// been missed before) and then at every notification, until the session
// fails or ctx ends.
func (s *Store) listenOnce(ctx context.Context, out chan<- struct{}) error {
	conn, err := s.dedicatedSession(ctx, "meshroot listen")
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `LISTEN `+changeChannel); err != nil {
		return err
	}
	s.feed.pid.Store(conn.PgConn().PID())
	s.feed.listening.Store(true)
	s.feed.connects.Add(1)
	signal(out)
	for {
		if err := conn.PgConn().WaitForNotification(ctx); err != nil {
			return err
		}
		signal(out)
	}
}

// dedicatedSession opens a session outside the pool, with TCP keepalive
// tuned by sessionKeepAlive, named app in pg_stat_activity.
func (s *Store) dedicatedSession(ctx context.Context, app string) (*pgx.Conn, error) {
	cc := s.pool.Config().ConnConfig.Copy()
	cc.RuntimeParams["application_name"] = app
	for k, v := range sessionKeepAliveParams {
		cc.RuntimeParams[k] = v
	}
	d := &net.Dialer{KeepAliveConfig: sessionKeepAlive}
	cc.DialFunc = d.DialContext
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cc)
	if err != nil {
		return nil, markLost(err)
	}
	return conn, nil
}

// signal puts a value on out unless one is waiting already.
func signal(out chan<- struct{}) {
	select {
	case out <- struct{}{}:
	default:
	}
}
