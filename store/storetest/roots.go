package storetest

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
)

// updateRootState runs UpdateRootState in a transaction of its own.
func updateRootState(t *testing.T, s store.Store, id string, from, to store.RootState, at time.Time) error {
	return s.Update(ctx(t), func(tx store.Tx) error { return tx.UpdateRootState(ctx(t), id, from, to, at) })
}

func testUpdateRootState(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error { return tx.CreateRoot(ctx(t), sampleRoot("r1", base)) })
	at := base.Add(time.Hour + time.Nanosecond)
	if err := updateRootState(t, s, "r1", store.RootActive, store.RootRetiring, at); err != nil {
		t.Fatalf("UpdateRootState(active -> retiring): %v", err)
	}
	got, err := s.GetRoot(ctx(t), "r1")
	if err != nil {
		t.Fatalf("GetRoot: %v", err)
	}
	if got.State != store.RootRetiring || !got.StateChangedAt.Equal(at) {
		t.Errorf("State = %q at %v, want %q at %v", got.State, got.StateChangedAt, store.RootRetiring, at)
	}
	err = updateRootState(t, s, "missing", store.RootActive, store.RootRevoked, at)
	wantErr(t, "UpdateRootState(missing)", err, store.ErrNotFound, "missing")
}

// testUpdateRootStateConflict: a root that is not in the expected state is
// left alone and the update fails with ErrConflict.
func testUpdateRootStateConflict(t *testing.T, s store.Store) {
	r := sampleRoot("r1", base)
	r.StateChangedAt = base
	update(t, s, func(tx store.Tx) error { return tx.CreateRoot(ctx(t), r) })
	err := updateRootState(t, s, "r1", store.RootPrepared, store.RootActive, base.Add(time.Hour))
	wantErr(t, "UpdateRootState(from prepared, root is active)", err, store.ErrConflict, "r1")
	got, err := s.GetRoot(ctx(t), "r1")
	if err != nil {
		t.Fatalf("GetRoot: %v", err)
	}
	checkRoot(t, got, r)

	// A conflict inside a transaction undoes that transaction's other
	// writes when the caller returns it.
	err = s.Update(ctx(t), func(tx store.Tx) error {
		if err := tx.CreateRoot(ctx(t), sampleRoot("r2", base)); err != nil {
			return err
		}
		return tx.UpdateRootState(ctx(t), "r1", store.RootRetired, store.RootActive, base)
	})
	wantErr(t, "UpdateRootState(from retired) after CreateRoot", err, store.ErrConflict, "r1")
	if _, err := s.GetRoot(ctx(t), "r2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRoot(r2) after the conflicting transaction: %v, want ErrNotFound", err)
	}
}

// testConcurrentUpdateRootState: of writers that all expect the same
// state, exactly one moves the root; the others get ErrConflict.
func testConcurrentUpdateRootState(t *testing.T, s store.Store) {
	const goroutines = 8
	for round := range 10 {
		id := "r" + string(rune('a'+round))
		update(t, s, func(tx store.Tx) error { return tx.CreateRoot(ctx(t), sampleRoot(id, base)) })
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			errs  = make([]error, goroutines)
		)
		to := []store.RootState{store.RootRetiring, store.RootRevoked}
		for g := range goroutines {
			wg.Go(func() {
				<-start
				errs[g] = updateRootState(t, s, id, store.RootActive, to[g%2], base.Add(time.Duration(g+1)*time.Second))
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for g, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Errorf("root %s: goroutines %d and %d both moved it out of active", id, winner, g)
			case err == nil:
				winner = g
			case !errors.Is(err, store.ErrConflict):
				t.Errorf("root %s: goroutine %d: UpdateRootState: %v, want nil or ErrConflict", id, g, err)
			}
		}
		if winner < 0 {
			t.Fatalf("root %s: no goroutine moved it", id)
		}
		got, err := s.GetRoot(ctx(t), id)
		if err != nil {
			t.Fatalf("GetRoot: %v", err)
		}
		if want := base.Add(time.Duration(winner+1) * time.Second); got.State != to[winner%2] || !got.StateChangedAt.Equal(want) {
			t.Errorf("root %s = %s at %v, want the winner's (goroutine %d) %s at %v", id, got.State, got.StateChangedAt, winner, to[winner%2], want)
		}
	}
}

func sampleRoot(id string, createdAt time.Time) store.Root {
	return store.Root{
		ID:          id,
		TrustDomain: "example.org",
		State:       store.RootActive,
		KeyRef:      "key-" + id,
		ChainPEM:    []byte("-----BEGIN CERTIFICATE-----\n" + id + "\n-----END CERTIFICATE-----\n"),
		NotAfter:    createdAt.Add(365 * 24 * time.Hour),
		CreatedAt:   createdAt,
		// Every field set, so that round trips check them all.
		CrossPEM:      []byte("-----BEGIN CERTIFICATE-----\ncross-" + id + "\n-----END CERTIFICATE-----\n"),
		AddedSequence: 7,
	}
}

func testRoots(t *testing.T, s store.Store) {
	want := sampleRoot("r1", base)
	update(t, s, func(tx store.Tx) error { return tx.CreateRoot(ctx(t), want) })

	got, err := s.GetRoot(ctx(t), "r1")
	if err != nil {
		t.Fatalf("GetRoot: %v", err)
	}
	checkRoot(t, got, want)

	_, err = s.GetRoot(ctx(t), "missing")
	wantErr(t, "GetRoot(missing)", err, store.ErrNotFound, "missing")

	err = s.Update(ctx(t), func(tx store.Tx) error { return tx.CreateRoot(ctx(t), sampleRoot("r1", base)) })
	wantErr(t, "CreateRoot(duplicate)", err, store.ErrAlreadyExists, "r1")
}

func testRootsOldestFirst(t *testing.T, s store.Store) {
	// Inserted newest first. The whole-second time and the times around it
	// catch implementations that sort times as trimmed RFC 3339 text.
	whole := base.Truncate(time.Second)
	roots := []store.Root{
		sampleRoot("c", whole.Add(2*time.Second)),
		sampleRoot("b", whole.Add(500*time.Millisecond)),
		sampleRoot("a", whole),
		sampleRoot("z", whole.Add(-time.Nanosecond)),
	}
	update(t, s, func(tx store.Tx) error {
		for _, r := range roots {
			if err := tx.CreateRoot(ctx(t), r); err != nil {
				return err
			}
		}
		return nil
	})
	got, err := s.ListRoots(ctx(t))
	if err != nil {
		t.Fatalf("ListRoots: %v", err)
	}
	if ids := rootIDs(got); ids != "z,a,b,c" {
		t.Fatalf("ListRoots order = %s, want z,a,b,c (oldest CreatedAt first)", ids)
	}
	for i, want := range []store.Root{roots[3], roots[2], roots[1], roots[0]} {
		checkRoot(t, got[i], want)
	}
}

func testBundleSequence(t *testing.T, s store.Store) {
	if n, err := s.BundleSequence(ctx(t)); err != nil || n != 0 {
		t.Fatalf("BundleSequence of a new store = %d, %v; want 0", n, err)
	}
	var want uint64
	for range 3 {
		want++
		update(t, s, func(tx store.Tx) error {
			n, err := tx.IncrementBundleSequence(ctx(t))
			if err != nil {
				return err
			}
			if n != want {
				t.Errorf("IncrementBundleSequence = %d, want %d", n, want)
			}
			return nil
		})
	}
	update(t, s, func(tx store.Tx) error {
		for range 2 {
			want++
			n, err := tx.IncrementBundleSequence(ctx(t))
			if err != nil {
				return err
			}
			if n != want {
				t.Errorf("IncrementBundleSequence (same transaction) = %d, want %d", n, want)
			}
		}
		return nil
	})
	if n, err := s.BundleSequence(ctx(t)); err != nil || n != want {
		t.Errorf("BundleSequence = %d, %v; want %d", n, err, want)
	}
}

func rootIDs(roots []store.Root) string {
	ids := make([]string, len(roots))
	for i, r := range roots {
		ids[i] = r.ID
	}
	return strings.Join(ids, ",")
}

func checkRoot(t *testing.T, got, want store.Root) {
	t.Helper()
	if got.ID != want.ID || got.TrustDomain != want.TrustDomain || got.State != want.State ||
		got.KeyRef != want.KeyRef || !bytes.Equal(got.ChainPEM, want.ChainPEM) ||
		!got.NotAfter.Equal(want.NotAfter) || !got.CreatedAt.Equal(want.CreatedAt) ||
		!bytes.Equal(got.CrossPEM, want.CrossPEM) || got.AddedSequence != want.AddedSequence || !got.StateChangedAt.Equal(want.StateChangedAt) {
		t.Errorf("root mismatch:\n got %+v\nwant %+v", got, want)
	}
}
