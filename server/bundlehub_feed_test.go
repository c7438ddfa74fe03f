package server_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/testca"
	"github.com/meshroot/meshroot/keys/disk"
	"github.com/meshroot/meshroot/server"
	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/postgres"
	"github.com/meshroot/meshroot/store/postgres/pgtest"
)

// pgReplica is the authority of one replica on the shared database dsn,
// with disk keys in keyDir (shared by the replicas, as HA requires).
func pgReplica(t testing.TB, dsn, keyDir string) (*ca.Service, store.Store) {
	t.Helper()
	st, err := postgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	km, err := disk.New(disk.Options{Dir: keyDir, InsecurePlaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := ca.NewService(st, km, ca.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	return svc, st
}

// listener is what the PostgreSQL store tells about its change feed.
type listener interface{ Listening() (bool, uint32) }

// followingHub starts a hub on svc that follows st's change feed and
// polls every poll.
func followingHub(t testing.TB, svc *ca.Service, st store.Store, poll time.Duration) (*server.BundleHub, listener) {
	t.Helper()
	return startHub(t, svc, st, poll, true)
}

// startHub starts a hub on svc polling every poll and, with follow,
// following st's change feed.
func startHub(t testing.TB, svc *ca.Service, st store.Store, poll time.Duration, follow bool) (*server.BundleHub, listener) {
	t.Helper()
	feed, ok := store.ChangeFeedOf(st)
	if !ok {
		t.Fatal("the PostgreSQL store has no change feed")
	}
	hub := server.NewBundleHub(svc, testca.QuietLog(t))
	ctx, cancel := context.WithCancel(context.Background())
	if follow {
		hub.Follow(feed.Changes(ctx))
	}
	done := make(chan struct{})
	go func() { hub.Run(ctx, poll); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	l := feed.(listener)
	if follow {
		testca.WaitFor(t, 10*time.Second, "the change feed listening", func() bool { ok, _ := l.Listening(); return ok })
	}
	return hub, l
}

// nextChange waits up to d for the hub's next change after seq and
// returns how long it took, or fails.
func nextChange(t testing.TB, hub *server.BundleHub, changed <-chan struct{}, start time.Time, d time.Duration) time.Duration {
	t.Helper()
	select {
	case <-changed:
		return time.Since(start)
	case <-time.After(d):
		b, _, _ := hub.Current()
		t.Fatalf("the hub did not change within %s (sequence %d)", d, b.Local.Sequence)
		return 0
	}
}

// changeWith waits up to d from start for the hub to hold a bundle with
// want roots and returns how long it took, or fails. It follows every
// change: another write of the replica that committed (a CRL it publishes
// after the root's init, say) can reach the hub first.
func changeWith(t testing.TB, hub *server.BundleHub, start time.Time, d time.Duration, want int) time.Duration {
	t.Helper()
	deadline := time.After(d - time.Since(start))
	for {
		b, _, changed := hub.Current()
		if len(b.Local.Roots) == want {
			return time.Since(start)
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("the hub did not hold %d roots within %s (it holds %d, sequence %d)", want, d, len(b.Local.Roots), b.Local.Sequence)
			return 0
		}
	}
}

// A root prepared through replica A reaches replica B's hub through the
// change feed: B polls only every hour, so nothing else can deliver it.
func TestHubFollowsChangesOfOtherReplica(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	keyDir := filepath.Join(t.TempDir(), "keys")
	svcA, _ := pgReplica(t, dsn, keyDir)
	svcB, stB := pgReplica(t, dsn, keyDir)
	ctx := ca.WithActor(t.Context(), "test")
	if _, err := svcA.InitRoot(ctx, ca.InitRootRequest{TrustDomain: "example.org"}); err != nil {
		t.Fatal(err)
	}
	hub, _ := followingHub(t, svcB, stB, time.Hour)
	testca.WaitFor(t, 5*time.Second, "B's first bundle", func() bool { _, ok, _ := hub.Current(); return ok })
	start := time.Now()
	if _, err := svcA.PrepareRoot(ctx, ca.PrepareRootRequest{}); err != nil {
		t.Fatal(err)
	}
	d := changeWith(t, hub, start, time.Second, 2)
	t.Logf("committed on A, in B's hub after %s", d)
}

// While B's listener is down (its session was terminated and it waits a
// minute before reconnecting), the poll still delivers A's change.
func TestHubPollsWhileChangeFeedIsDown(t *testing.T) {
	defer func(old time.Duration) { postgres.ListenRetry = old }(postgres.ListenRetry)
	postgres.ListenRetry = time.Minute
	dsn := pgtest.NewDatabase(t)
	keyDir := filepath.Join(t.TempDir(), "keys")
	svcA, _ := pgReplica(t, dsn, keyDir)
	svcB, stB := pgReplica(t, dsn, keyDir)
	ctx := ca.WithActor(t.Context(), "test")
	if _, err := svcA.InitRoot(ctx, ca.InitRootRequest{TrustDomain: "example.org"}); err != nil {
		t.Fatal(err)
	}
	hub, l := followingHub(t, svcB, stB, 300*time.Millisecond)
	testca.WaitFor(t, 5*time.Second, "B's first bundle", func() bool { _, ok, _ := hub.Current(); return ok })
	_, pid := l.Listening()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend($1, 10000)`, int32(pid)); err != nil {
		t.Fatal(err)
	}
	testca.WaitFor(t, 5*time.Second, "the listener down", func() bool { ok, _ := l.Listening(); return !ok })
	start := time.Now()
	if _, err := svcA.PrepareRoot(ctx, ca.PrepareRootRequest{}); err != nil {
		t.Fatal(err)
	}
	d := changeWith(t, hub, start, 2*time.Second, 2)
	if ok, _ := l.Listening(); ok {
		t.Fatal("the listener reconnected: the test no longer shows the poll delivering")
	}
	t.Logf("with the listener down, the poll delivered after %s", d)
}
