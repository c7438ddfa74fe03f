package server

import (
	"context"
	"time"
)

// Follow makes the hub refresh at once whenever changes arrives, besides
// polling: a store shared by several servers (store.ChangeFeed) tells
// each of them of the changes any of them committed, so that watchers on
// every replica get a new bundle, CRL or root state within a second. Call
// it before Run. The poll stays, as the safety net for notifications lost
// while the feed reconnects.
func (h *BundleHub) Follow(changes <-chan struct{}) {
	h.feed = changes
}

// feedGap is the least time between two refreshes the feed asks for: a
// burst of commits on other replicas (every issuance notifies) costs each
// replica at most one refresh per feedGap, and a change still reaches it
// well within a second.
var feedGap = 100 * time.Millisecond

// spaceFeedRefresh waits until feedGap has passed since the last refresh.
func (h *BundleHub) spaceFeedRefresh(ctx context.Context) {
	wait := feedGap - time.Since(h.lastRefresh)
	if wait <= 0 {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
