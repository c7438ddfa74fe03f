package ca_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
)

// With CRL signing gated (several servers: only the leader signs), a
// follower serves the CRL the leader stored while it is current, never
// signs one itself, and says what is wrong once it is missing or expired.
func TestRootCRLSignedByLeaderOnly(t *testing.T) {
	f := newCRLFleet(t)
	ctx := ca.WithActor(context.Background(), actor)
	leader := false
	f.svc.SetCRLSigning(func() bool { return leader })
	if _, err := f.svc.RootCRL(ctx, f.root.ID); err == nil || !strings.Contains(err.Error(), "the leader signs it") {
		t.Fatalf("follower without a stored CRL: %v, want a refusal naming the leader", err)
	}
	leader = true
	signed, err := f.svc.RootCRL(ctx, f.root.ID)
	if err != nil {
		t.Fatal(err)
	}
	leader = false
	// Due for re-signing, still current: the follower serves it as is.
	f.now = f.now.Add(ca.CRLValidity - ca.CRLRefreshBefore + time.Hour)
	got, err := f.svc.RootCRL(ctx, f.root.ID)
	if err != nil || got.Number != signed.Number {
		t.Fatalf("follower with a due CRL: number %d, %v; want the stored %d", got.Number, err, signed.Number)
	}
	leader = true
	if got, err = f.svc.RootCRL(ctx, f.root.ID); err != nil || got.Number != signed.Number+1 {
		t.Fatalf("leader with a due CRL: number %d, %v; want it re-signed as %d", got.Number, err, signed.Number+1)
	}
	leader = false
	f.now = f.now.Add(ca.CRLValidity + time.Hour)
	if _, err := f.svc.RootCRL(ctx, f.root.ID); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("follower with an expired CRL: %v, want a refusal", err)
	}
}
