package agent

import (
	"context"
	"testing"
	"time"
)

// TestGracefulOutlivesCancel: the reconcile context stays live for the
// grace after the agent's context ends, ends when the grace is over, and
// ends at once when the reconcile is done.
func TestGracefulOutlivesCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	rctx, done := graceful(ctx, 200*time.Millisecond)
	defer done()
	cancel()
	select {
	case <-rctx.Done():
		t.Fatal("the reconcile context ended with the agent's, before the grace")
	case <-time.After(50 * time.Millisecond):
	}
	select {
	case <-rctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the reconcile context outlived the grace")
	}

	rctx, done = graceful(context.Background(), time.Hour)
	done()
	if rctx.Err() == nil {
		t.Error("done did not end the reconcile context")
	}
}
