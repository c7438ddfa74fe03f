package storetest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/meshroot/meshroot/store"
)

func testTxReadsOwnWrites(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error {
		if err := tx.CreateCluster(ctx(t), store.Cluster{Name: "east", TrustDomain: "example.org", CreatedAt: base}); err != nil {
			return err
		}
		if _, err := tx.GetCluster(ctx(t), "east"); err != nil {
			return fmt.Errorf("GetCluster inside the transaction: %w", err)
		}
		if _, err := tx.IncrementBundleSequence(ctx(t)); err != nil {
			return err
		}
		if n, err := tx.BundleSequence(ctx(t)); err != nil || n != 1 {
			return fmt.Errorf("BundleSequence inside the transaction = %d, %v; want 1", n, err)
		}
		if err := tx.SetMeta(ctx(t), "k", "v"); err != nil {
			return err
		}
		if v, err := tx.Meta(ctx(t), "k"); err != nil || v != "v" {
			return fmt.Errorf("Meta inside the transaction = %q, %v; want \"v\"", v, err)
		}
		if err := tx.CreateJoinToken(ctx(t), sampleJoinToken("t1", "east", base)); err != nil {
			return err
		}
		if err := tx.UseJoinToken(ctx(t), "t1", base, nil); err != nil {
			return err
		}
		if jt, err := tx.GetJoinToken(ctx(t), "t1"); err != nil || !jt.UsedAt.Equal(base) {
			return fmt.Errorf("GetJoinToken inside the transaction = %+v, %v; want UsedAt %v", jt, err, base)
		}
		return nil
	})
}

// writeEverything writes one of each kind of record in tx.
func writeEverything(t *testing.T, tx store.Tx) error {
	if err := tx.CreateRoot(ctx(t), sampleRoot("r1", base)); err != nil {
		return err
	}
	if err := tx.CreateCluster(ctx(t), store.Cluster{Name: "east", TrustDomain: "example.org", CreatedAt: base}); err != nil {
		return err
	}
	if err := tx.CreateIntermediate(ctx(t), sampleIntermediate("0a", "east", "r1", base)); err != nil {
		return err
	}
	if _, err := tx.IncrementBundleSequence(ctx(t)); err != nil {
		return err
	}
	if _, err := tx.AppendAudit(ctx(t), store.AuditEntry{Time: base, Actor: "test", Action: "x", Result: "ok", Details: "{}"}); err != nil {
		return err
	}
	if err := tx.CreateJoinToken(ctx(t), sampleJoinToken("t1", "east", base)); err != nil {
		return err
	}
	if err := tx.CreateFederationPeer(ctx(t), sampleFederationPeer("partner.example", base)); err != nil {
		return err
	}
	return tx.SetMeta(ctx(t), "k", "v")
}

// checkNothingLanded fails if any record written by writeEverything exists.
func checkNothingLanded(t *testing.T, s store.Store) {
	t.Helper()
	if _, err := s.GetRoot(ctx(t), "r1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRoot after rollback: %v, want ErrNotFound", err)
	}
	if _, err := s.GetCluster(ctx(t), "east"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetCluster after rollback: %v, want ErrNotFound", err)
	}
	if _, err := s.GetIntermediate(ctx(t), "0a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetIntermediate after rollback: %v, want ErrNotFound", err)
	}
	if n, err := s.BundleSequence(ctx(t)); err != nil || n != 0 {
		t.Errorf("BundleSequence after rollback = %d, %v; want 0", n, err)
	}
	if entries, err := s.ListAudit(ctx(t), 0, 0); err != nil || len(entries) != 0 {
		t.Errorf("ListAudit after rollback = %d entries, %v; want none", len(entries), err)
	}
	if v, err := s.Meta(ctx(t), "k"); err != nil || v != "" {
		t.Errorf("Meta after rollback = %q, %v; want \"\"", v, err)
	}
	if _, err := s.GetJoinToken(ctx(t), "t1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetJoinToken after rollback: %v, want ErrNotFound", err)
	}
	if _, err := s.GetFederationPeer(ctx(t), "partner.example"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetFederationPeer after rollback: %v, want ErrNotFound", err)
	}
	if list, err := s.ListFederationPeers(ctx(t)); err != nil || len(list) != 0 {
		t.Errorf("ListFederationPeers after rollback = %d peers, %v; want none", len(list), err)
	}
}

// checkStillWorks fails unless s accepts a write after a rolled back one.
func checkStillWorks(t *testing.T, s store.Store) {
	t.Helper()
	update(t, s, func(tx store.Tx) error { return writeEverything(t, tx) })
	if _, err := s.GetCluster(ctx(t), "east"); err != nil {
		t.Errorf("GetCluster after a successful Update: %v", err)
	}
	e, err := s.ListAudit(ctx(t), 0, 0)
	if err != nil || len(e) != 1 || e[0].Seq != 1 {
		t.Errorf("ListAudit after rollback then commit = %v, %v; want one entry with seq 1", e, err)
	}
}

func testUpdateRollsBackOnError(t *testing.T, s store.Store) {
	errBoom := errors.New("boom")
	err := s.Update(ctx(t), func(tx store.Tx) error {
		if err := writeEverything(t, tx); err != nil {
			return err
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Update returned %v, want the error fn returned", err)
	}
	checkNothingLanded(t, s)
	checkStillWorks(t, s)
}

func testUpdateRollsBackOnPanic(t *testing.T, s store.Store) {
	var writeErr error
	recovered := func() (p any) {
		defer func() { p = recover() }()
		_ = s.Update(ctx(t), func(tx store.Tx) error {
			if writeErr = writeEverything(t, tx); writeErr != nil {
				return writeErr
			}
			panic("boom")
		})
		return nil
	}()
	if writeErr != nil {
		t.Fatalf("writes before the panic: %v", writeErr)
	}
	if recovered != "boom" {
		t.Fatalf("Update did not re-panic with fn's value: recovered %v", recovered)
	}
	checkNothingLanded(t, s)
	checkStillWorks(t, s)
}

// testClose closes the store: Close succeeds, and an Update after it fails
// without running its fn. (open's cleanup may Close the store again; a
// second Close must not panic.)
func testClose(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error { return writeEverything(t, tx) })
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ran := false
	err := s.Update(ctx(t), func(tx store.Tx) error { ran = true; return nil })
	if err == nil || ran {
		t.Errorf("Update after Close = %v (fn ran: %v); want an error and fn not run", err, ran)
	}
}
