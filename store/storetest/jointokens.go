package storetest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
)

// sampleJoinToken returns an unused token for cluster, created at createdAt
// and valid for an hour.
func sampleJoinToken(id, cluster string, createdAt time.Time) store.JoinToken {
	h := sha256.Sum256([]byte("secret of " + id))
	return store.JoinToken{
		ID:         id,
		Cluster:    cluster,
		SecretHash: h[:],
		CreatedAt:  createdAt,
		ExpiresAt:  createdAt.Add(time.Hour),
	}
}

// createClusters registers clusters with the given names.
func createClusters(t *testing.T, s store.Store, names ...string) {
	t.Helper()
	update(t, s, func(tx store.Tx) error {
		for _, n := range names {
			if err := tx.CreateCluster(ctx(t), store.Cluster{Name: n, TrustDomain: "example.org", CreatedAt: base}); err != nil {
				return err
			}
		}
		return nil
	})
}

// createJoinTokens adds tokens in one transaction.
func createJoinTokens(t *testing.T, s store.Store, tokens ...store.JoinToken) {
	t.Helper()
	update(t, s, func(tx store.Tx) error {
		for _, jt := range tokens {
			if err := tx.CreateJoinToken(ctx(t), jt); err != nil {
				return err
			}
		}
		return nil
	})
}

// useJoinToken runs UseJoinToken in its own Update.
func useJoinToken(t *testing.T, s store.Store, id string, at time.Time) error {
	return s.Update(ctx(t), func(tx store.Tx) error { return tx.UseJoinToken(ctx(t), id, at, nil) })
}

func testJoinTokens(t *testing.T, s store.Store) {
	createClusters(t, s, "east")
	unused := sampleJoinToken("t1", "east", base)
	used := sampleJoinToken("t2", "east", base.Add(time.Second))
	used.UsedAt = base.Add(2*time.Second + time.Nanosecond)
	used.KeyHash, used.IssuedSerial = []byte("key hash of t2"), "0a1b" // copies keep both
	createJoinTokens(t, s, unused, used)

	for _, want := range []store.JoinToken{unused, used} {
		got, err := s.GetJoinToken(ctx(t), want.ID)
		if err != nil {
			t.Fatalf("GetJoinToken(%q): %v", want.ID, err)
		}
		checkJoinToken(t, got, want)
	}
	if got, err := s.GetJoinToken(ctx(t), "t1"); err == nil && !got.UsedAt.IsZero() {
		t.Errorf("UsedAt of an unused token = %v, want the zero time", got.UsedAt)
	}

	_, err := s.GetJoinToken(ctx(t), "missing")
	wantErr(t, "GetJoinToken(missing)", err, store.ErrNotFound, "missing")

	dup := sampleJoinToken("t1", "east", base.Add(time.Minute))
	err = s.Update(ctx(t), func(tx store.Tx) error { return tx.CreateJoinToken(ctx(t), dup) })
	wantErr(t, "CreateJoinToken(duplicate)", err, store.ErrAlreadyExists, "t1")
	got, err := s.GetJoinToken(ctx(t), "t1")
	if err != nil {
		t.Fatalf("GetJoinToken: %v", err)
	}
	checkJoinToken(t, got, unused) // not overwritten
}

func testUseJoinToken(t *testing.T, s store.Store) {
	createClusters(t, s, "east")
	jt := sampleJoinToken("t1", "east", base)
	createJoinTokens(t, s, jt)

	first := base.Add(time.Minute + time.Nanosecond)
	if err := useJoinToken(t, s, "t1", first); err != nil {
		t.Fatalf("UseJoinToken: %v", err)
	}
	jt.UsedAt = first
	got, err := s.GetJoinToken(ctx(t), "t1")
	if err != nil {
		t.Fatalf("GetJoinToken: %v", err)
	}
	checkJoinToken(t, got, jt)

	err = useJoinToken(t, s, "t1", first.Add(time.Minute))
	wantErr(t, "UseJoinToken(used)", err, store.ErrConflict, "t1")
	if got, err := s.GetJoinToken(ctx(t), "t1"); err != nil || !got.UsedAt.Equal(first) {
		t.Errorf("after a second use, GetJoinToken = %+v, %v; want UsedAt still %v", got, err, first)
	}

	err = useJoinToken(t, s, "missing", first)
	wantErr(t, "UseJoinToken(missing)", err, store.ErrNotFound, "missing")
}

func testConcurrentUseJoinToken(t *testing.T, s store.Store) {
	const goroutines = 8
	createClusters(t, s, "east")
	createJoinTokens(t, s, sampleJoinToken("t1", "east", base))

	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, goroutines)
	)
	for g := range goroutines {
		wg.Go(func() {
			<-start
			errs[g] = useJoinToken(t, s, "t1", base.Add(time.Duration(g+1)*time.Second))
		})
	}
	close(start)
	wg.Wait()

	winner := -1
	for g, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("goroutines %d and %d both used the token", winner, g)
		case err == nil:
			winner = g
		case !errors.Is(err, store.ErrConflict):
			t.Errorf("goroutine %d: UseJoinToken: %v, want nil or ErrConflict", g, err)
		}
	}
	if winner < 0 {
		t.Fatal("no goroutine used the token")
	}
	got, err := s.GetJoinToken(ctx(t), "t1")
	if err != nil {
		t.Fatalf("GetJoinToken: %v", err)
	}
	if want := base.Add(time.Duration(winner+1) * time.Second); !got.UsedAt.Equal(want) {
		t.Errorf("UsedAt = %v, want the winner's (goroutine %d) %v", got.UsedAt, winner, want)
	}
}

func testDeleteExpiredJoinTokens(t *testing.T, s store.Store) {
	createClusters(t, s, "east")
	now := base.Add(24 * time.Hour)
	token := func(id string, expiresAt, usedAt time.Time) store.JoinToken {
		jt := sampleJoinToken(id, "east", base)
		jt.ExpiresAt, jt.UsedAt = expiresAt, usedAt
		return jt
	}
	expired := []store.JoinToken{
		token("expired-long-ago", now.Add(-time.Hour), time.Time{}),
		token("expired-just", now.Add(-time.Nanosecond), time.Time{}),
		token("expired-used", now.Add(-time.Minute), base.Add(time.Minute)),
		token("no-expiry", time.Time{}, time.Time{}), // zero counts as expired
	}
	kept := []store.JoinToken{
		token("expires-now", now, time.Time{}), // not before now
		token("expires-soon", now.Add(time.Nanosecond), time.Time{}),
		token("expires-later", now.Add(time.Hour), time.Time{}),
		token("used-valid", now.Add(time.Hour), base.Add(time.Minute)),
	}
	createJoinTokens(t, s, append(append([]store.JoinToken{}, expired...), kept...)...)

	var n int
	update(t, s, func(tx store.Tx) error {
		var err error
		n, err = tx.DeleteExpiredJoinTokens(ctx(t), now)
		return err
	})
	if n != len(expired) {
		t.Errorf("DeleteExpiredJoinTokens = %d, want %d", n, len(expired))
	}
	for _, jt := range expired {
		if _, err := s.GetJoinToken(ctx(t), jt.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetJoinToken(%q) after DeleteExpiredJoinTokens: %v, want ErrNotFound", jt.ID, err)
		}
	}
	for _, want := range kept {
		got, err := s.GetJoinToken(ctx(t), want.ID)
		if err != nil {
			t.Errorf("GetJoinToken(%q) after DeleteExpiredJoinTokens: %v", want.ID, err)
			continue
		}
		checkJoinToken(t, got, want)
	}

	update(t, s, func(tx store.Tx) error {
		var err error
		n, err = tx.DeleteExpiredJoinTokens(ctx(t), now)
		return err
	})
	if n != 0 {
		t.Errorf("DeleteExpiredJoinTokens again = %d, want 0", n)
	}
}

func testDeleteClusterDeletesJoinTokens(t *testing.T, s store.Store) {
	createClusters(t, s, "east", "west")
	used := sampleJoinToken("e2", "east", base)
	used.UsedAt = base.Add(time.Minute)
	createJoinTokens(t, s, sampleJoinToken("e1", "east", base), used, sampleJoinToken("w1", "west", base))

	update(t, s, func(tx store.Tx) error { return tx.DeleteCluster(ctx(t), "east") })
	for _, id := range []string{"e1", "e2"} {
		_, err := s.GetJoinToken(ctx(t), id)
		wantErr(t, "GetJoinToken(token of a deleted cluster)", err, store.ErrNotFound, id)
	}
	got, err := s.GetJoinToken(ctx(t), "w1")
	if err != nil {
		t.Fatalf("GetJoinToken of another cluster's token: %v", err)
	}
	checkJoinToken(t, got, sampleJoinToken("w1", "west", base))

	err = s.Update(ctx(t), func(tx store.Tx) error { return tx.DeleteCluster(ctx(t), "east") })
	wantErr(t, "DeleteCluster(missing)", err, store.ErrNotFound, "east")

	// The name and the token ids can be used again.
	createClusters(t, s, "east")
	createJoinTokens(t, s, sampleJoinToken("e1", "east", base))
}

func checkJoinToken(t *testing.T, got, want store.JoinToken) {
	t.Helper()
	if got.ID != want.ID || got.Cluster != want.Cluster || !bytes.Equal(got.SecretHash, want.SecretHash) ||
		!got.CreatedAt.Equal(want.CreatedAt) || !got.ExpiresAt.Equal(want.ExpiresAt) || !got.UsedAt.Equal(want.UsedAt) ||
		!bytes.Equal(got.KeyHash, want.KeyHash) || got.IssuedSerial != want.IssuedSerial {
		t.Errorf("join token mismatch:\n got %+v\nwant %+v", got, want)
	}
}

// testJoinTokenIssue: the key a token was spent with is recorded with the
// spend, and the issued serial is recorded once, only for that key.
func testJoinTokenIssue(t *testing.T, s store.Store) {
	createClusters(t, s, "east")
	jt := sampleJoinToken("t1", "east", base)
	createJoinTokens(t, s, jt, sampleJoinToken("t2", "east", base))
	key, other := []byte("key hash one"), []byte("key hash two")
	record := func(id string, k []byte, serial string) error {
		return s.Update(ctx(t), func(tx store.Tx) error { return tx.RecordJoinTokenIssue(ctx(t), id, k, serial) })
	}

	err := record("t1", key, "01")
	wantErr(t, "RecordJoinTokenIssue(unused)", err, store.ErrConflict, "t1")

	used := base.Add(time.Minute)
	if err := s.Update(ctx(t), func(tx store.Tx) error { return tx.UseJoinToken(ctx(t), "t1", used, key) }); err != nil {
		t.Fatalf("UseJoinToken with a key hash: %v", err)
	}
	jt.UsedAt, jt.KeyHash = used, key
	got, err := s.GetJoinToken(ctx(t), "t1")
	if err != nil {
		t.Fatalf("GetJoinToken: %v", err)
	}
	checkJoinToken(t, got, jt)

	err = record("t1", other, "01")
	wantErr(t, "RecordJoinTokenIssue(another key)", err, store.ErrConflict, "t1")
	if err := record("t1", key, "01"); err != nil {
		t.Fatalf("RecordJoinTokenIssue: %v", err)
	}
	err = record("t1", key, "02")
	wantErr(t, "RecordJoinTokenIssue(again)", err, store.ErrConflict, "t1")
	jt.IssuedSerial = "01"
	if got, err = s.GetJoinToken(ctx(t), "t1"); err != nil {
		t.Fatalf("GetJoinToken: %v", err)
	}
	checkJoinToken(t, got, jt) // the first serial stays

	err = record("missing", key, "01")
	wantErr(t, "RecordJoinTokenIssue(missing)", err, store.ErrNotFound, "missing")
	if err := record("t2", nil, "01"); err == nil {
		t.Error("RecordJoinTokenIssue with an empty key hash succeeded, want an error")
	}

	// Recorded in the transaction that spends: a rolled-back issuance
	// leaves no serial.
	_ = s.Update(ctx(t), func(tx store.Tx) error {
		if err := tx.UseJoinToken(ctx(t), "t2", used, key); err != nil {
			return err
		}
		if err := tx.RecordJoinTokenIssue(ctx(t), "t2", key, "03"); err != nil {
			return err
		}
		return errors.New("roll back")
	})
	if got, err := s.GetJoinToken(ctx(t), "t2"); err != nil || !got.UsedAt.IsZero() || got.IssuedSerial != "" {
		t.Errorf("after a rolled-back spend and issue, GetJoinToken(t2) = %+v, %v; want unused, no serial", got, err)
	}
}
