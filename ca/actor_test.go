package ca_test

import (
	"context"
	"testing"

	"github.com/meshroot/meshroot/ca"
)

// A change whose context says nobody acts is refused and leaves no trace:
// no root, no audit row with an empty actor.
func TestChangeWithoutActorIsRefused(t *testing.T) {
	ctx := context.Background()
	svc, st := newService(t)
	if _, err := svc.InitRoot(ctx, ca.InitRootRequest{TrustDomain: "example.org"}); err == nil {
		t.Fatal("root init without an actor in the context was accepted")
	}
	if roots, _ := st.ListRoots(ctx); len(roots) != 0 {
		t.Errorf("root init without an actor stored %d roots", len(roots))
	}
	if entries, _ := st.ListAudit(ctx, 0, 0); len(entries) != 0 {
		t.Errorf("audit log has %d rows after a refused anonymous change: %+v", len(entries), entries)
	}

	// The same call with the actor in the context works and names it.
	if _, err := svc.InitRoot(ca.WithActor(ctx, "cli:test"), ca.InitRootRequest{TrustDomain: "example.org"}); err != nil {
		t.Fatal(err)
	}
	entries, err := st.ListAudit(ctx, 0, 0)
	if err != nil || len(entries) != 1 || entries[0].Actor != "cli:test" || entries[0].Action != "root.init" {
		t.Fatalf("audit after root init: %+v, %v; want one root.init by cli:test", entries, err)
	}
	if got := ca.ActorFrom(ca.WithActor(ctx, "x")); got != "x" {
		t.Errorf("ActorFrom(WithActor(x)) = %q", got)
	}
}
