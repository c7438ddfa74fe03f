package server

// Follow makes the hub refresh at once whenever changes arrives, besides
// polling: a store shared by several servers (store.ChangeFeed) tells
// each of them of the changes any of them committed, so that watchers on
// every replica get a new bundle, CRL or root state within a second. Call
// it before Run. The poll stays, as the safety net for notifications lost
// while the feed reconnects.
func (h *BundleHub) Follow(changes <-chan struct{}) {
	h.feed = changes
}
