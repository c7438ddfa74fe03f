package server

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"sync"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/federation"
)

// Bundles is what the hub holds: the trust domain's own bundle and the
// last good bundles of the trust domains it federates with.
type Bundles struct {
	Local     ca.TrustBundle
	Federated []federation.Bundle
	// ActiveRootID is the root new intermediates come from.
	ActiveRootID string
	// CRLs are the fleet's revocation lists (for ca-crl.pem).
	CRLs ca.CRLSet
	// CRLSnap keys the entries of CRLs, for watch streams sending deltas.
	CRLSnap *CRLSnapshot
	// Version changes whenever Local, Federated, ActiveRootID or CRLs does.
	Version [32]byte
	// Gen numbers the hub's changes (0: bundles not from a hub). Unlike
	// Version, which two states with the same content share (a root
	// prepared, then rolled back), it names one state exactly: the
	// bundle's sequence, the federated bundles' sequences and all.
	Gen uint64
}

// BundleHub holds the current bundles and tells watchers when they change.
// It polls the store, which catches changes made by other processes (the
// offline CLI, other replicas, the federation watchers), and can be poked
// for changes made in this process so that they reach agents at once.
type BundleHub struct {
	svc  *ca.Service
	held *federation.Held
	log  *slog.Logger
	poke chan struct{}
	feed <-chan struct{} // changes committed by other replicas (nil: none)
	// lastRefresh is when Run last started a refresh.
	lastRefresh time.Time

	mu      sync.Mutex
	current Bundles
	ok      bool
	changed chan struct{} // closed and replaced on every change
}

// NewBundleHub returns a hub over svc. Call Run to keep it current.
func NewBundleHub(svc *ca.Service, log *slog.Logger) *BundleHub {
	return &BundleHub{svc: svc, held: federation.NewHeld(svc.Store(), log), log: log, poke: make(chan struct{}, 1), changed: make(chan struct{})}
}

// Run refreshes the bundles every interval and on every Poke until ctx ends.
func (h *BundleHub) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		h.lastRefresh = time.Now()
		h.refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-h.poke:
		case _, ok := <-h.feed:
			if !ok {
				h.feed = nil
			}
			h.spaceFeedRefresh(ctx)
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

func (h *BundleHub) refresh(ctx context.Context) {
	tb, err := h.svc.TrustBundle(ctx)
	if err != nil {
		h.mu.Lock()
		was := h.ok
		h.mu.Unlock()
		if was {
			h.log.WarnContext(ctx, "trust bundle unavailable", "error", err)
		}
		return
	}
	// Held withholds a peer of our own trust domain: a peer added before
	// the first root could name it.
	fed, err := h.held.Bundles(ctx, tb.TrustDomain)
	if err != nil {
		h.log.WarnContext(ctx, "federated bundles unavailable; keeping the last ones", "error", err)
		h.mu.Lock()
		fed = h.current.Federated
		h.mu.Unlock()
	}
	active := ""
	if r, err := h.svc.ActiveRoot(ctx); err == nil {
		active = r.ID
	}
	crls := h.fleetCRLs(ctx)
	h.mu.Lock()
	prev := h.current.CRLSnap
	h.mu.Unlock()
	snap := newCRLSnapshot(crls, prev) // hashed once: for the version and for watch streams' deltas
	b := Bundles{Local: tb, Federated: fed, ActiveRootID: active, CRLs: crls, CRLSnap: snap, Version: withCRLs(version(tb, fed, active), snap.Keys(), crls.Missing)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ok && b.Version == h.current.Version {
		return
	}
	b.Gen = h.current.Gen + 1
	h.current, h.ok = b, true
	close(h.changed)
	h.changed = make(chan struct{})
	bundleSequence.Set(float64(tb.Sequence))
}

// version fingerprints the bundles' content.
func version(tb ca.TrustBundle, fed []federation.Bundle, active string) [32]byte {
	h := sha256.New()
	h.Write([]byte(active))
	h.Write([]byte{0})
	for _, r := range tb.Roots {
		h.Write(r.Raw)
	}
	h.Write([]byte{0})
	for _, f := range fed {
		h.Write([]byte(f.TrustDomain))
		h.Write([]byte{0})
		for _, r := range f.Roots {
			h.Write(r.Raw)
		}
		h.Write([]byte{1})
	}
	var v [32]byte
	copy(v[:], h.Sum(nil))
	return v
}

// Current returns the bundles, whether there are any yet, and a channel
// that is closed at the next change.
func (h *BundleHub) Current() (Bundles, bool, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.current, h.ok, h.changed
}

// Local returns the trust domain's own bundle, for the bundle endpoint.
func (h *BundleHub) Local() (ca.TrustBundle, bool) {
	b, ok, _ := h.Current()
	return b.Local, ok
}
