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
	_, _, changed := hub.Current()
	start := time.Now()
	if _, err := svcA.PrepareRoot(ctx, ca.PrepareRootRequest{}); err != nil {
		t.Fatal(err)
	}
	d := nextChange(t, hub, changed, start, time.Second)
	if b, _, _ := hub.Current(); len(b.Local.Roots) != 2 {
		t.Errorf("B's bundle has %d roots after the prepare, want 2", len(b.Local.Roots))
	}
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
	_, _, changed := hub.Current()
	start := time.Now()
	if _, err := svcA.PrepareRoot(ctx, ca.PrepareRootRequest{}); err != nil {
		t.Fatal(err)
	}
	d := nextChange(t, hub, changed, start, 2*time.Second)
	if ok, _ := l.Listening(); ok {
		t.Fatal("the listener reconnected: the test no longer shows the poll delivering")
	}
	t.Logf("with the listener down, the poll delivered after %s", d)
}
