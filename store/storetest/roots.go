package storetest

import (
	"errors"
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
