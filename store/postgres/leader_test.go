package postgres

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/postgres/pgtest"
)

// fastElection shortens the election's timing for a test.
func fastElection(t *testing.T) {
	t.Helper()
	old := [4]time.Duration{HeartbeatEvery, HeartbeatTimeout, TakeoverDelay, CampaignRetry}
	t.Cleanup(func() {
		HeartbeatEvery, HeartbeatTimeout, TakeoverDelay, CampaignRetry = old[0], old[1], old[2], old[3]
	})
	HeartbeatEvery, HeartbeatTimeout, TakeoverDelay, CampaignRetry = 300*time.Millisecond, time.Second, 1600*time.Millisecond, 100*time.Millisecond
}

// leaderPID returns the backend PID of the session holding the leadership
// lock, as an administrator finds it.
func leaderPID(t *testing.T, dsn string) uint32 {
	t.Helper()
	var pid int32
	// pg_locks spans the server's databases, other tests' included.
	err := rawConn(t, dsn).QueryRow(t.Context(), `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = $1`, leaderLockKey).Scan(&pid)
	if err != nil {
		t.Fatalf("find the leader's session: %v", err)
	}
	return uint32(pid)
}

// Three replicas campaign: exactly one leads; when its session is
// terminated its lease is lost, and another replica leads, only after the
// old one's lease was lost; Replicas shows who leads.
func TestElectionOneLeaderAndFailover(t *testing.T) {
	fastElection(t)
	dsn := pgtest.NewDatabase(t)
	type won struct {
		replica string
		lease   store.Lease
		at      time.Time
	}
	wins := make(chan won, 3)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, id := range []string{"r1", "r2", "r3"} {
		s := openTest(t, dsn)
		wg.Go(func() {
			l, err := s.Campaign(ctx, id)
			if err == nil {
				wins <- won{id, l, time.Now()}
			}
		})
	}
	first := <-wins
	select {
	case w := <-wins:
		t.Fatalf("%s and %s lead at once", first.replica, w.replica)
	case <-time.After(2 * TakeoverDelay):
	}
	reps, err := openTest(t, dsn).Replicas(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	leaders := 0
	for _, r := range reps {
		if r.Leader {
			leaders++
			if r.ID != first.replica {
				t.Errorf("replicas table names %s leader, the lease is %s's", r.ID, first.replica)
			}
		}
		if age := r.Now.Sub(r.Heartbeat); age > 2*time.Second {
			t.Errorf("replica %s heartbeat %s old", r.ID, age)
		}
	}
	if len(reps) != 3 || leaders != 1 {
		t.Fatalf("replicas = %+v, want 3 with one leader", reps)
	}

	terminate(t, dsn, leaderPID(t, dsn))
	var lostAt time.Time
	select {
	case <-first.lease.Lost():
		lostAt = time.Now()
	case <-time.After(HeartbeatEvery + HeartbeatTimeout + time.Second):
		t.Fatal("the leader whose session was terminated did not lose its lease")
	}
	if first.lease.Err() == nil {
		t.Error("lost lease without a reason")
	}
	var second won
	select {
	case second = <-wins:
	case <-time.After(5 * time.Second):
		t.Fatal("no new leader 5 s after the leader's session was terminated")
	}
	if second.replica == first.replica {
		t.Fatalf("%s leads again", second.replica)
	}
	if !second.at.After(lostAt) {
		t.Errorf("%s led at %s, before the old leader's lease was lost at %s", second.replica, second.at, lostAt)
	}
	first.lease.Release()
	select {
	case w := <-wins:
		t.Fatalf("%s and %s lead at once", second.replica, w.replica)
	case <-time.After(2 * TakeoverDelay):
	}
	second.lease.Release()
	select {
	case w := <-wins:
		t.Logf("after a release %s leads", w.replica)
		w.lease.Release()
	case <-time.After(5 * time.Second):
		t.Fatal("no leader after the leader released")
	}
}

// A leader that gives up on its own (Release) keeps the lock until its
// session is closed, so a follower cannot lead while Release runs.
func TestElectionReleaseHandsOver(t *testing.T) {
	fastElection(t)
	dsn := pgtest.NewDatabase(t)
	a, b := openTest(t, dsn), openTest(t, dsn)
	la, err := a.Campaign(t.Context(), "a")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan store.Lease, 1)
	go func() {
		if l, err := b.Campaign(t.Context(), "b"); err == nil {
			got <- l
		}
	}()
	select {
	case <-got:
		t.Fatal("b leads while a holds the lease")
	case <-time.After(3 * CampaignRetry):
	}
	released := time.Now()
	la.Release()
	select {
	case lb := <-got:
		if d := time.Since(released); d < TakeoverDelay {
			t.Errorf("b led %s after a released, before the takeover delay %s", d, TakeoverDelay)
		}
		lb.Release()
	case <-time.After(5 * time.Second):
		t.Fatal("b does not lead after a released")
	}
}
