package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
)

func testAppendAudit(t *testing.T, s store.Store) {
	in := []store.AuditEntry{
		{Time: base, Actor: "cli:uid=1000", Action: "root.init", Target: "r1", Result: "ok", Details: `{"trust_domain":"example.org"}`},
		{Time: base.Add(time.Nanosecond), Actor: "cluster:east", Action: "intermediate.issue", Target: "0a", Result: "ok", Details: `{}`},
		{Time: base.Add(time.Second), Actor: "cluster:west", Action: "intermediate.issue", Target: "", Result: "denied", Details: `{"reason":"unknown cluster"}`},
	}
	var appended []store.AuditEntry
	for i, e := range in {
		update(t, s, func(tx store.Tx) error {
			got, err := tx.AppendAudit(ctx(t), e)
			if err != nil {
				return err
			}
			appended = append(appended, got)
			return nil
		})
		got := appended[i]
		if got.Seq != int64(i+1) {
			t.Errorf("entry %d: Seq = %d, want %d", i, got.Seq, i+1)
		}
		wantPrev := ""
		if i > 0 {
			wantPrev = appended[i-1].Hash
		}
		if got.PrevHash != wantPrev {
			t.Errorf("entry %d: PrevHash = %q, want %q", i, got.PrevHash, wantPrev)
		}
		if want := store.ChainHash(got.PrevHash, got); got.Hash != want {
			t.Errorf("entry %d: Hash = %q, want ChainHash = %q", i, got.Hash, want)
		}
		checkAudit(t, got, store.AuditEntry{Seq: got.Seq, Time: e.Time, Actor: e.Actor, Action: e.Action,
			Target: e.Target, Result: e.Result, Details: e.Details, PrevHash: got.PrevHash, Hash: got.Hash})
	}

	list, err := s.ListAudit(ctx(t), 0, 0)
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	if len(list) != len(appended) {
		t.Fatalf("ListAudit returned %d entries, want %d", len(list), len(appended))
	}
	for i := range list {
		checkAudit(t, list[i], appended[i])
	}
	if err := store.VerifyChain(list, nil); err != nil {
		t.Errorf("VerifyChain: %v", err)
	}
	checkVerifier(t, s)
}

func testListAuditPaging(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error {
		for i := range 5 {
			if _, err := tx.AppendAudit(ctx(t), store.AuditEntry{Time: base, Actor: "test", Action: "a", Target: fmt.Sprint(i), Result: "ok", Details: "{}"}); err != nil {
				return err
			}
		}
		return nil
	})
	for _, tc := range []struct {
		after int64
		limit int
		want  []int64
	}{
		{0, 0, []int64{1, 2, 3, 4, 5}},
		{0, -1, []int64{1, 2, 3, 4, 5}},
		{0, 2, []int64{1, 2}},
		{2, 2, []int64{3, 4}},
		{4, 10, []int64{5}},
		{5, 0, nil},
	} {
		list, err := s.ListAudit(ctx(t), tc.after, tc.limit)
		if err != nil {
			t.Fatalf("ListAudit(%d, %d): %v", tc.after, tc.limit, err)
		}
		var seqs []int64
		for _, e := range list {
			seqs = append(seqs, e.Seq)
		}
		if fmt.Sprint(seqs) != fmt.Sprint(tc.want) {
			t.Errorf("ListAudit(%d, %d) seqs = %v, want %v", tc.after, tc.limit, seqs, tc.want)
		}
	}
}

func testConcurrentAppendAudit(t *testing.T, s store.Store) {
	const goroutines, perGoroutine = 8, 25
	var (
		wg   sync.WaitGroup
		done = make(chan struct{})
	)
	// A reader runs throughout: reads must not fail while writes happen.
	readerDone := make(chan error, 1)
	go func() {
		for {
			select {
			case <-done:
				readerDone <- nil
				return
			default:
			}
			if _, err := s.ListAudit(ctx(t), 0, 10); err != nil {
				readerDone <- fmt.Errorf("ListAudit during appends: %w", err)
				return
			}
			if _, err := s.BundleSequence(ctx(t)); err != nil {
				readerDone <- fmt.Errorf("BundleSequence during appends: %w", err)
				return
			}
		}
	}()
	for g := range goroutines {
		wg.Go(func() {
			for i := range perGoroutine {
				err := s.Update(ctx(t), func(tx store.Tx) error {
					_, err := tx.AppendAudit(ctx(t), store.AuditEntry{
						Time: time.Now(), Actor: fmt.Sprintf("g%d", g), Action: "test.append",
						Target: fmt.Sprint(i), Result: "ok", Details: "{}",
					})
					return err
				})
				if err != nil {
					t.Errorf("goroutine %d append %d: %v", g, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(done)
	if err := <-readerDone; err != nil {
		t.Error(err)
	}

	list, err := s.ListAudit(ctx(t), 0, 0)
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	if len(list) != goroutines*perGoroutine {
		t.Fatalf("ListAudit returned %d entries, want %d", len(list), goroutines*perGoroutine)
	}
	seen := make(map[string]bool)
	for i, e := range list {
		if e.Seq != int64(i+1) {
			t.Fatalf("entry %d has Seq %d, want %d", i, e.Seq, i+1)
		}
		key := e.Actor + "/" + e.Target
		if seen[key] {
			t.Errorf("entry %s appended twice", key)
		}
		seen[key] = true
	}
	if err := store.VerifyChain(list, nil); err != nil {
		t.Errorf("VerifyChain: %v", err)
	}
	checkVerifier(t, s)
}

// checkVerifier checks that s finds its audit chain intact and that
// VerifyAuditRows (and VerifyAuditLog over it) counts every row.
func checkVerifier(t *testing.T, s store.Store) {
	t.Helper()
	if err := s.VerifyAudit(ctx(t)); err != nil {
		t.Errorf("VerifyAudit: %v", err)
	}
	all, err := s.ListAudit(ctx(t), 0, 0)
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	if n, err := s.VerifyAuditRows(ctx(t)); err != nil || n != int64(len(all)) {
		t.Errorf("VerifyAuditRows = %d rows, %v; the log has %d rows", n, err, len(all))
	}
	if n, err := store.VerifyAuditLog(ctx(t), s); err != nil || n != int64(len(all)) {
		t.Errorf("VerifyAuditLog = %d rows, %v; the log has %d rows", n, err, len(all))
	}
}

func testVerifyEmptyAudit(t *testing.T, s store.Store) {
	checkVerifier(t, s)
}

func checkAudit(t *testing.T, got, want store.AuditEntry) {
	t.Helper()
	if got.Seq != want.Seq || !got.Time.Equal(want.Time) || got.Actor != want.Actor || got.Action != want.Action ||
		got.Target != want.Target || got.Result != want.Result || got.Details != want.Details ||
		got.PrevHash != want.PrevHash || got.Hash != want.Hash {
		t.Errorf("audit entry mismatch:\n got %+v\nwant %+v", got, want)
	}
}
