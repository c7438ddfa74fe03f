package issuer

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/meshroot/meshroot/ca"
)

// BundleHub holds the current trust bundle and tells watchers when it
// changes. It polls the store's bundle sequence, which catches changes made
// by other processes (the offline CLI, other replicas), and can be poked for
// changes made in this process so that they reach agents at once.
type BundleHub struct {
	svc  *ca.Service
	log  *slog.Logger
	poke chan struct{}

	mu      sync.Mutex
	current ca.TrustBundle
	ok      bool
	changed chan struct{} // closed and replaced on every change
}

// NewBundleHub returns a hub over svc. Call Run to keep it current.
func NewBundleHub(svc *ca.Service, log *slog.Logger) *BundleHub {
	return &BundleHub{svc: svc, log: log, poke: make(chan struct{}, 1), changed: make(chan struct{})}
}

// Run refreshes the bundle every interval and on every Poke until ctx ends.
func (h *BundleHub) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		h.refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-h.poke:
		}
	}
}

// Poke asks for an immediate refresh.
func (h *BundleHub) Poke() {
	select {
	case h.poke <- struct{}{}:
	default:
	}
}

// Refresh reloads the bundle now and reports whether it is available.
func (h *BundleHub) refresh(ctx context.Context) bool {
	tb, err := h.svc.TrustBundle(ctx)
	if err != nil {
		h.mu.Lock()
		was := h.ok
		h.mu.Unlock()
		if was {
			h.log.WarnContext(ctx, "trust bundle unavailable", "error", err)
		}
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ok && tb.Sequence == h.current.Sequence {
		return true
	}
	h.current, h.ok = tb, true
	close(h.changed)
	h.changed = make(chan struct{})
	bundleSequence.Set(float64(tb.Sequence))
	return true
}

// Current returns the bundle, whether there is one yet, and a channel that
// is closed at the next change.
func (h *BundleHub) Current() (ca.TrustBundle, bool, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.current, h.ok, h.changed
}
