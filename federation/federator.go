package federation

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/federation/bundle"
	"github.com/meshroot/meshroot/store"
)

// Federator defaults.
const (
	DefaultMinRefresh     = 30 * time.Second
	DefaultMaxRefresh     = time.Hour
	DefaultRefresh        = 5 * time.Minute
	DefaultPollPeers      = 5 * time.Second
	maxLastErrorBytes     = 1024
	noBundleForSPIFFEAuth = "no bundle to authenticate the endpoint: give --bootstrap-bundle"
)

// FederatorOptions tune a Federator. Zero fields take their defaults.
type FederatorOptions struct {
	// MinRefresh and MaxRefresh clamp a peer's refresh hint (30 s, 1 h).
	MinRefresh, MaxRefresh time.Duration
	// DefaultRefresh is used when the peer's bundle has no refresh hint
	// (5 min; clamped too).
	DefaultRefresh time.Duration
	// MaxBytes caps a bundle document (1 MiB).
	MaxBytes int64
	// PollPeers is how often the store is read for added and removed
	// peers (5 s).
	PollPeers time.Duration
	Log       *slog.Logger
	// Now is the clock of the recorded status (time.Now).
	Now func() time.Time
	// OnChange is called, from the peer's watcher goroutine, after a
	// peer's stored bundle changed.
	OnChange func(trustDomain string)
	// Roots verify https_web peers (nil: the system roots).
	Roots *x509.CertPool
	// UserAgent is sent with every fetch (default meshroot-federation);
	// a server among several names itself in it, for the peers' logs.
	UserAgent string
}

func (o FederatorOptions) withDefaults() FederatorOptions {
	if o.MinRefresh <= 0 {
		o.MinRefresh = DefaultMinRefresh
	}
	if o.MaxRefresh <= 0 {
		o.MaxRefresh = DefaultMaxRefresh
	}
	if o.MaxRefresh < o.MinRefresh {
		o.MaxRefresh = o.MinRefresh
	}
	if o.DefaultRefresh <= 0 {
		o.DefaultRefresh = DefaultRefresh
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBundleBytes
	}
	if o.PollPeers <= 0 {
		o.PollPeers = DefaultPollPeers
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Federator keeps the bundles of the foreign trust domains in the store
// current: one watcher per federation peer fetches the peer's bundle
// endpoint, honours its refresh hint, backs off on errors, refuses bad
// bundles (see bundle.Parse, plus a lower spiffe_sequence than the held
// one) and never drops the last good bundle. Run it on one replica only.
type Federator struct {
	st   Store
	opts FederatorOptions
	// fetchTimeout, when set, bounds a fetch below FetchTimeout (tests).
	fetchTimeout time.Duration

	resync chan struct{}

	mu       sync.Mutex
	watchers map[string]*watcher
}

type watcher struct {
	url, profile, endpointID string
	cancel                   context.CancelFunc
	refresh                  chan struct{}
	done                     chan struct{}
}

// NewFederator returns a Federator over st. Start it with Run.
func NewFederator(st Store, opts FederatorOptions) *Federator {
	return &Federator{st: st, opts: opts.withDefaults(), resync: make(chan struct{}, 1), watchers: map[string]*watcher{}}
}

// Run starts a watcher for every peer in the store and, polling the store
// every PollPeers, starts and stops watchers as peers are added and
// removed (and restarts one whose URL, profile or endpoint ID changed). It
// returns nil once ctx ends and every watcher has stopped.
func (f *Federator) Run(ctx context.Context) error {
	t := time.NewTicker(f.opts.PollPeers)
	defer t.Stop()
	defer f.stopAll()
	for {
		f.sync(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-f.resync:
		}
	}
}

// Refresh makes the watcher of trustDomain fetch now. A peer that was just
// added, and has no watcher yet, is picked up at once (its first fetch is
// immediate).
func (f *Federator) Refresh(trustDomain string) {
	f.mu.Lock()
	w := f.watchers[trustDomain]
	f.mu.Unlock()
	ch := f.resync
	if w != nil {
		ch = w.refresh
	}
	select {
	case ch <- struct{}{}:
	default:
	}
}

// sync reconciles the running watchers with the peers in the store.
func (f *Federator) sync(ctx context.Context) {
	peers, err := f.st.ListFederationPeers(ctx)
	if err != nil {
		if ctx.Err() == nil {
			f.opts.Log.Error("federation: cannot list peers; watchers keep running", "error", err)
		}
		return
	}
	want := make(map[string]store.FederationPeer, len(peers))
	for _, p := range peers {
		want[p.TrustDomain] = p
	}
	f.mu.Lock()
	var stop []*watcher
	var removed []string
	for td, w := range f.watchers {
		p, ok := want[td]
		if ok && p.URL == w.url && string(p.Profile) == w.profile && p.EndpointSPIFFEID == w.endpointID {
			continue
		}
		stop = append(stop, w)
		delete(f.watchers, td)
		if !ok {
			removed = append(removed, td)
		}
	}
	f.mu.Unlock()
	for _, w := range stop {
		w.cancel()
		<-w.done
	}
	for _, td := range removed {
		fetchTotal.DeletePartialMatch(prometheus.Labels{"trust_domain": td})
		bundleSequence.DeleteLabelValues(td)
		f.opts.Log.Info("federation: peer removed; its watcher stopped", "trust_domain", td)
	}
	if ctx.Err() != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range peers {
		if _, ok := f.watchers[p.TrustDomain]; ok {
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		w := &watcher{
			url: p.URL, profile: string(p.Profile), endpointID: p.EndpointSPIFFEID,
			cancel: cancel, refresh: make(chan struct{}, 1), done: make(chan struct{}),
		}
		f.watchers[p.TrustDomain] = w
		go f.watch(wctx, p.TrustDomain, w)
	}
}

func (f *Federator) stopAll() {
	f.mu.Lock()
	ws := f.watchers
	f.watchers = map[string]*watcher{}
	f.mu.Unlock()
	for _, w := range ws {
		w.cancel()
	}
	for _, w := range ws {
		<-w.done
	}
}

// running reports whether a watcher runs for td (tests).
func (f *Federator) running(td string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.watchers[td] != nil
}

// watch fetches the bundle of td until ctx ends or the peer is removed.
func (f *Federator) watch(ctx context.Context, td string, w *watcher) {
	defer close(w.done)
	failures := 0
	for {
		wait, gone := f.attempt(ctx, td, &failures)
		if gone && ctx.Err() == nil {
			// Removed from the store before sync saw it: forget the
			// watcher, so that a peer added again gets a new one.
			f.mu.Lock()
			if f.watchers[td] == w {
				delete(f.watchers, td)
			}
			f.mu.Unlock()
			fetchTotal.DeletePartialMatch(prometheus.Labels{"trust_domain": td})
			bundleSequence.DeleteLabelValues(td)
			f.opts.Log.Info("federation: peer removed; its watcher stopped", "trust_domain", td)
			return
		}
		if gone || ctx.Err() != nil {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-w.refresh:
			t.Stop()
		case <-t.C:
		}
	}
}

// attempt runs one fetch of td and records its outcome. It returns the
// wait before the next one, and gone when the peer no longer exists.
func (f *Federator) attempt(ctx context.Context, td string, failures *int) (time.Duration, bool) {
	log := f.opts.Log.With("trust_domain", td)
	now := f.opts.Now()
	peer, err := f.st.GetFederationPeer(ctx, td)
	if errors.Is(err, store.ErrNotFound) {
		return 0, true
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0, true
		}
		*failures++
		wait := f.backoff(*failures)
		fetchTotal.WithLabelValues(td, bundle.ReasonStore).Inc()
		log.Error("federation: cannot read the peer from the store", "reason", bundle.ReasonStore, "error", err, "retry_in", wait)
		return wait, false
	}
	b, err := f.fetch(ctx, peer)
	if err == nil {
		var changed bool
		var seq uint64
		var interval time.Duration
		changed, seq, interval, err = f.accept(ctx, peer, b, now)
		if err == nil {
			*failures = 0
			bundleSequence.WithLabelValues(td).Set(float64(seq))
			if changed {
				fetchTotal.WithLabelValues(td, "ok").Inc()
				log.Info("federation: stored a new bundle", "sequence", seq, "x509_authorities", len(b.X509Authorities()), "next_in", interval)
				if f.opts.OnChange != nil {
					f.opts.OnChange(td)
				}
			} else {
				fetchTotal.WithLabelValues(td, "unchanged").Inc()
				log.Debug("federation: bundle unchanged", "sequence", seq, "next_in", interval)
			}
			return interval, false
		}
		if errors.Is(err, store.ErrNotFound) {
			return 0, true
		}
	}
	if ctx.Err() != nil {
		return 0, true // shutting down or removed: nothing to record
	}
	*failures++
	wait := f.backoff(*failures)
	reason := bundle.ReasonOf(err)
	fetchTotal.WithLabelValues(td, reason).Inc()
	if len(peer.Bundle) > 0 {
		bundleSequence.WithLabelValues(td).Set(float64(peer.Sequence))
	}
	log.Warn("federation: bundle refused; the last good bundle stays", "reason", reason, "error", err, "retry_in", wait, "failures", *failures)
	msg := reason + ": " + err.Error()
	if len(msg) > maxLastErrorBytes {
		msg = msg[:maxLastErrorBytes]
	}
	st := store.FederationStatus{LastAttempt: now, LastSuccess: peer.Status.LastSuccess, LastError: msg, NextAttempt: now.Add(wait)}
	serr := f.st.Update(ctx, func(tx store.Tx) error { return tx.UpdateFederationStatus(ctx, td, st) })
	if errors.Is(serr, store.ErrNotFound) {
		return 0, true
	}
	if serr != nil && ctx.Err() == nil {
		log.Error("federation: cannot record the peer's status", "error", serr)
	}
	return wait, false
}

// fetch fetches peer's bundle with the profile's authentication.
func (f *Federator) fetch(ctx context.Context, peer store.FederationPeer) (*spiffebundle.Bundle, error) {
	td, err := spiffeid.TrustDomainFromString(peer.TrustDomain)
	if err != nil {
		return nil, bundle.Errorf(bundle.ReasonConfig, "trust domain %q: %v", peer.TrustDomain, err)
	}
	// A peer added before the first root could name our own trust domain:
	// never fetch roots for it (the hub does not deliver them either).
	if own, err := f.st.Meta(ctx, ca.MetaTrustDomain); err != nil {
		return nil, bundle.NewError(bundle.ReasonStore, fmt.Errorf("read this trust domain's name: %w", err))
	} else if own != "" {
		if err := checkNotOwn(peer.TrustDomain, own); err != nil {
			return nil, err
		}
	}
	var auth FetchAuth
	switch store.FederationProfile(peer.Profile) {
	case store.ProfileHTTPSWeb:
		auth = WebPKIAuth(f.opts.Roots)
	case store.ProfileHTTPSSPIFFE:
		id, err := spiffeid.FromString(peer.EndpointSPIFFEID)
		if err != nil {
			return nil, bundle.Errorf(bundle.ReasonConfig, "endpoint SPIFFE ID %q: %v", peer.EndpointSPIFFEID, err)
		}
		if len(peer.Bundle) == 0 {
			return nil, bundle.Errorf(bundle.ReasonNoBundle, "%s", noBundleForSPIFFEAuth)
		}
		held, err := spiffebundle.Parse(td, peer.Bundle)
		if err != nil || len(held.X509Authorities()) == 0 {
			return nil, bundle.Errorf(bundle.ReasonNoBundle, "the stored bundle cannot authenticate the endpoint (%v): %s", err, noBundleForSPIFFEAuth)
		}
		// The endpoint's SVID is verified with the peer's held bundle, the
		// only trust meshroot has for it, even in the rare case of an
		// endpoint ID in another trust domain than the peer's.
		auth = SPIFFEAuth(x509bundle.FromX509Authorities(id.TrustDomain(), held.X509Authorities()), id)
	default:
		return nil, bundle.Errorf(bundle.ReasonConfig, "profile %q is unknown: use https_web or https_spiffe", peer.Profile)
	}
	if f.fetchTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.fetchTimeout)
		defer cancel()
	}
	b, _, err := FetchBundle(WithUserAgent(ctx, f.opts.UserAgent), td, peer.URL, auth, f.opts.MaxBytes)
	return b, err
}

// accept stores b for peer unless it is a step back, and records success.
// It reports whether the stored bundle changed, the sequence now held and
// the wait before the next fetch.
//
// Rollback protection lives in the sequence held for the peer (the store's
// column, never lowered): a bundle with a lower spiffe_sequence is refused;
// a bundle without one is stored only when its authorities are new, and
// then under the held sequence, so that a peer (or whoever sits in its
// place) cannot reset the protection by leaving the member out.
func (f *Federator) accept(ctx context.Context, peer store.FederationPeer, b *spiffebundle.Bundle, now time.Time) (bool, uint64, time.Duration, error) {
	interval := f.interval(b)
	var changed bool
	var seq uint64
	err := f.st.Update(ctx, func(tx store.Tx) error {
		changed = false
		p, err := tx.GetFederationPeer(ctx, peer.TrustDomain)
		if err != nil {
			return err
		}
		var held *spiffebundle.Bundle
		heldSeq := p.Sequence
		if len(p.Bundle) > 0 {
			// A bad stored bundle counts as none; its sequence still holds.
			held, _ = bundle.Parse(b.TrustDomain(), p.Bundle, bundle.Options{})
		}
		if held != nil {
			if s, ok := held.SequenceNumber(); ok && s > heldSeq {
				heldSeq = s
			}
		}
		next := b.Clone()
		newSeq, newHas := next.SequenceNumber()
		switch {
		case newHas && newSeq < heldSeq:
			return bundle.Errorf(bundle.ReasonLowerSequence, "bundle sequence %d is lower than the held %d: refusing to step back", newSeq, heldSeq)
		case !newHas:
			seq = heldSeq
			changed = held == nil || !sameAuthorities(held, next)
			next.SetSequenceNumber(heldSeq) // kept, never lowered
		default:
			seq = newSeq
			changed = held == nil || !held.Equal(next)
		}
		if changed {
			doc, err := next.Marshal()
			if err != nil {
				return bundle.Errorf(bundle.ReasonParse, "re-marshal the bundle: %v", err)
			}
			if err := tx.SetFederatedBundle(ctx, p.TrustDomain, doc, seq, now); err != nil {
				return err
			}
		}
		return tx.UpdateFederationStatus(ctx, p.TrustDomain, store.FederationStatus{
			LastAttempt: now, LastSuccess: now, NextAttempt: now.Add(interval),
		})
	})
	if err != nil && bundle.ReasonOf(err) == "error" && !errors.Is(err, store.ErrNotFound) {
		err = bundle.NewError(bundle.ReasonStore, fmt.Errorf("store the bundle: %w", err))
	}
	return changed, seq, interval, err
}

// sameAuthorities reports whether a and b hold the same X.509 and JWT
// authorities (sequence and refresh hint aside).
func sameAuthorities(a, b *spiffebundle.Bundle) bool {
	return a.X509Bundle().Equal(b.X509Bundle()) && a.JWTBundle().Equal(b.JWTBundle())
}

// interval is the peer's refresh hint clamped to [MinRefresh, MaxRefresh],
// DefaultRefresh when it gives none.
func (f *Federator) interval(b *spiffebundle.Bundle) time.Duration {
	d, ok := b.RefreshHint()
	if !ok || d <= 0 {
		d = f.opts.DefaultRefresh
	}
	return min(max(d, f.opts.MinRefresh), f.opts.MaxRefresh)
}

// backoff is the wait after the n-th failure in a row: MinRefresh/8,
// doubling up to MaxRefresh, less up to a quarter of random jitter.
func (f *Federator) backoff(n int) time.Duration {
	d := max(f.opts.MinRefresh/8, time.Millisecond)
	for i := 1; i < n && d < f.opts.MaxRefresh; i++ {
		d *= 2
	}
	d = min(d, f.opts.MaxRefresh)
	return d - rand.N(d/4+1)
}

// Metrics of the federation watchers.
var (
	fetchTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshroot_federation_fetch_total",
		Help: "Bundle fetches from federation peers, by result: ok (stored a new bundle), unchanged, or the reason the bundle was refused.",
	}, []string{"trust_domain", "result"})
	bundleSequence = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meshroot_federation_bundle_sequence",
		Help: "spiffe_sequence of the bundle held for each federation peer.",
	}, []string{"trust_domain"})
)

// RegisterMetrics registers the federation metrics with r; registering them
// twice is not an error.
func RegisterMetrics(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{fetchTotal, bundleSequence, withheldGauge} {
		if err := r.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}
