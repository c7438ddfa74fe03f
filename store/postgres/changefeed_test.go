package postgres

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/postgres/pgtest"
)

// drain empties ch.
func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// within reports whether ch delivers within d.
func within(ch <-chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

// A change committed through one store (replica A) reaches the feed of
// another store on the same database (replica B); a rolled-back one, and
// a write to a table agents do not watch (cluster status), do not.
func TestChangeFeedAcrossStores(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	a, b := openTest(t, dsn), openTest(t, dsn)
	feed := b.Changes(t.Context())
	if !within(feed, 5*time.Second) {
		t.Fatal("no signal after the feed connected")
	}
	waitFor(t, "the listener", func() bool { ok, _ := b.Listening(); return ok })
	drain(feed)

	ctx := t.Context()
	boom := errors.New("rolled back")
	if err := a.Update(ctx, func(tx store.Tx) error {
		if err := writeSome(ctx, tx); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if err := a.Update(ctx, func(tx store.Tx) error {
		if err := tx.CreateCluster(ctx, store.Cluster{Name: "east", TrustDomain: "example.org", CreatedAt: time.Now()}); err != nil {
			return err
		}
		_, err := tx.AppendAudit(ctx, store.AuditEntry{Actor: "test", Action: "cluster.add", Target: "east", Result: "ok", Details: "{}"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if within(feed, 500*time.Millisecond) {
		t.Error("a rolled-back transaction, or an audited cluster write, signalled the feed")
	}
	start := time.Now()
	if err := a.Update(ctx, func(tx store.Tx) error { return writeSome(ctx, tx) }); err != nil {
		t.Fatal(err)
	}
	if !within(feed, time.Second) {
		t.Fatal("a committed root change did not reach the other store's feed within 1 s")
	}
	t.Logf("committed change reached the other store's feed in %s", time.Since(start))
}

// The listener's session ended (failover, pg_terminate_backend): the feed
// reconnects and signals once it listens again, because changes made in
// between were not delivered.
func TestChangeFeedReconnects(t *testing.T) {
	defer func(old time.Duration) { ListenRetry = old }(ListenRetry)
	ListenRetry = 100 * time.Millisecond
	dsn := pgtest.NewDatabase(t)
	a, b := openTest(t, dsn), openTest(t, dsn)
	ctx, cancel := context.WithCancel(t.Context())
	feed := b.Changes(ctx)
	waitFor(t, "the listener", func() bool { ok, _ := b.Listening(); return ok })
	_, pid := b.Listening()
	drain(feed)
	terminate(t, dsn, pid)
	waitFor(t, "a new listening session", func() bool { ok, p := b.Listening(); return ok && p != pid })
	if !within(feed, time.Second) {
		t.Error("no signal after the listener reconnected")
	}
	drain(feed)
	if err := a.Update(ctx, func(tx store.Tx) error { return writeSome(ctx, tx) }); err != nil {
		t.Fatal(err)
	}
	if !within(feed, time.Second) {
		t.Error("the reconnected listener missed a committed change")
	}
	cancel()
	for range feed {
	}
}
