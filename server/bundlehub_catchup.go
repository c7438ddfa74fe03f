package server

import (
	"context"
	"time"
)

// catchUpWait bounds how long a new watch waits for this replica's hub to
// reach the sequence the agent already holds.
const catchUpWait = 5 * time.Second

// CatchUp returns once the hub holds a local bundle of sequence seq or
// newer, asking for a refresh from the store until it does, or after wait
// (or when ctx ends). It reports whether the hub has caught up.
//
// With several replicas, an agent that heard of a change from one replica
// may reconnect to another that has not polled the store since: without
// this, the other replica would send the older bundle and the agent would
// step back until the next poll.
func (h *BundleHub) CatchUp(ctx context.Context, seq uint64, wait time.Duration) bool {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		b, ok, changed := h.Current()
		if ok && b.Local.Sequence >= seq {
			return true
		}
		h.Poke()
		select {
		case <-changed:
		case <-deadline.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}
