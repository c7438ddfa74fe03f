package ca_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// Expired join tokens are deleted, with one audit row saying how many;
// a pass with nothing to delete writes nothing.
func TestDeleteExpiredJoinTokens(t *testing.T) {
	svc, st := newService(t)
	minted := 0
	svc.SetJoinTokenMinter(func(cluster string, ttl time.Duration, now time.Time) (string, store.JoinToken, error) {
		minted++
		id := fmt.Sprintf("token%d", minted)
		return id, store.JoinToken{ID: id, Cluster: cluster, SecretHash: make([]byte, 32), CreatedAt: now, ExpiresAt: now.Add(ttl)}, nil
	})
	ctx := ca.WithActor(context.Background(), actor)
	if _, err := svc.InitRoot(ctx, ca.InitRootRequest{TrustDomain: "example.org"}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.AddCluster(ctx, ca.AddClusterRequest{Name: "east"}); err != nil {
		t.Fatal(err)
	}
	for _, ttl := range []time.Duration{time.Minute, 48 * time.Hour} {
		if _, err := svc.CreateJoinToken(ctx, ca.JoinTokenRequest{Cluster: "east", TTL: ttl}); err != nil {
			t.Fatal(err)
		}
	}
	hk := ca.WithActor(context.Background(), "server:test")
	if n, err := svc.DeleteExpiredJoinTokens(hk, time.Now()); err != nil || n != 0 {
		t.Fatalf("nothing expired: deleted %d, %v", n, err)
	}
	wantAudit(t, st, "token.expire", "ok", 0)
	if n, err := svc.DeleteExpiredJoinTokens(hk, time.Now().Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("one expired: deleted %d, %v", n, err)
	}
	wantAudit(t, st, "token.expire", "ok", 1)
	// The current token stayed: it is the one left to expire.
	if n, err := svc.DeleteExpiredJoinTokens(hk, time.Now().Add(72*time.Hour)); err != nil || n != 1 {
		t.Fatalf("the remaining token expired too: deleted %d, %v", n, err)
	}
	wantAudit(t, st, "token.expire", "ok", 2)
}
