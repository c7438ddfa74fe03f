package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
)

// TestGroupCommitIsolatesFailures runs many concurrent Updates, so that they
// share transactions, where every other one writes and then fails or
// panics: only the successful ones' writes land, each failure is returned
// to its own caller, and the audit chain stays whole.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "m.db"))
	ctx := context.Background()
	const n = 60
	errBoom := errors.New("boom")
	var wg sync.WaitGroup
	results := make([]error, n)
	panics := make([]any, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { panics[i] = recover() }()
			results[i] = s.Update(ctx, func(tx store.Tx) error {
				if err := tx.CreateCluster(ctx, store.Cluster{Name: fmt.Sprintf("c%02d", i), TrustDomain: "example.org", CreatedAt: time.Now()}); err != nil {
					return err
				}
				if _, err := tx.AppendAudit(ctx, store.AuditEntry{Actor: "t", Action: "a", Target: fmt.Sprint(i), Result: "ok", Details: "{}"}); err != nil {
					return err
				}
				switch i % 4 {
				case 1:
					return errBoom
				case 3:
					panic(fmt.Sprintf("panic %d", i))
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i := range n {
		_, err := s.GetCluster(ctx, fmt.Sprintf("c%02d", i))
		switch i % 4 {
		case 1:
			if !errors.Is(results[i], errBoom) || err == nil {
				t.Errorf("%d: Update = %v, cluster exists = %v; want boom and no cluster", i, results[i], err == nil)
			}
		case 3:
			if panics[i] != fmt.Sprintf("panic %d", i) || err == nil {
				t.Errorf("%d: panic %v, cluster exists = %v; want the panic and no cluster", i, panics[i], err == nil)
			}
		default:
			if results[i] != nil || err != nil {
				t.Errorf("%d: Update = %v, GetCluster = %v; want both nil", i, results[i], err)
			}
		}
	}
	entries, err := s.ListAudit(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != n/2 {
		t.Errorf("%d audit rows, want %d (the successful Updates')", len(entries), n/2)
	}
	if err := s.VerifyAudit(ctx); err != nil {
		t.Errorf("audit chain after group commits: %v", err)
	}
}

// TestUpdateAfterClose fails cleanly instead of hanging.
func TestUpdateAfterClose(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "m.db"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Update(context.Background(), func(store.Tx) error { return nil }) }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Update on a closed store succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Update on a closed store hangs")
	}
}
