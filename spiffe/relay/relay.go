// Package relay keeps a copy of a trust domain's SPIFFE bundle fetched from
// that trust domain's meshroot bundle endpoint, for a bundle endpoint at the
// network edge (the meshroot-bundle command) that holds no CA key, no store
// and no credential but its own TLS key.
//
// A Relay polls the upstream endpoint, checks every answer against the
// bundle it holds (same trust domain, a sequence number that never goes
// back, at least one X.509 authority), and hands the bundle it holds to
// spiffe.NewHandler. An upstream that cannot be reached, or that answers
// something the relay refuses, leaves the last good bundle in service.
package relay

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/federation"
	"github.com/meshroot/meshroot/federation/bundle"
)

// Poll bounds and default.
const (
	DefaultPoll = 5 * time.Second
	MinPoll     = time.Second
	MaxPoll     = time.Hour
)

// failureLogEvery is how often a failing upstream is logged again while it
// keeps failing for the same reason.
const failureLogEvery = time.Minute

// UserAgent is the User-Agent of the relay's fetches.
const UserAgent = "meshroot-bundle-relay"

// Config configures a Relay.
type Config struct {
	// TrustDomain is the trust domain whose bundle is relayed.
	TrustDomain spiffeid.TrustDomain
	// URL is the upstream bundle endpoint (https only).
	URL string
	// Roots authenticate an https_web upstream (nil: the system roots).
	// Ignored when EndpointID is set.
	Roots *x509.CertPool
	// EndpointID, when set, makes the upstream an https_spiffe endpoint:
	// it must present an X.509-SVID with exactly this ID that verifies
	// against the bundle the relay holds, or Bootstrap while it holds none.
	EndpointID spiffeid.ID
	// Bootstrap authenticates an https_spiffe upstream until the relay
	// holds a bundle. It is never served.
	Bootstrap *spiffebundle.Bundle
	// Poll is the interval between fetches (0: DefaultPoll; MinPoll to
	// MaxPoll), with up to a tenth of it added at random so that replicas
	// spread out.
	Poll time.Duration
	// CacheFile, when set, keeps the last bundle accepted, so that a
	// restarted relay serves it (and keeps refusing older sequences) while
	// the upstream cannot be reached. It is written whole, by rename.
	CacheFile string
	Log       *slog.Logger
}

// held is the bundle the relay serves.
type held struct {
	bundle  *spiffebundle.Bundle
	tb      ca.TrustBundle
	fetched time.Time // zero when read from the cache file
}

// Relay holds the relayed bundle. Its methods are safe for concurrent use.
type Relay struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	cur atomic.Pointer[held]

	mu         sync.Mutex // one fetch at a time; guards the fields below
	failing    string     // the reason of the current run of failures ("" when healthy)
	failSince  time.Time
	lastLogged time.Time
}

// New checks cfg and loads the cache file, when there is one. A cache file
// that exists but does not hold a valid bundle of the trust domain is an
// error: the relay would otherwise forget the sequence it must not go
// below.
func New(cfg Config) (*Relay, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("bundle relay: no trust domain: set the trust domain whose bundle is relayed")
	}
	if u, err := url.Parse(cfg.URL); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("bundle relay: upstream bundle endpoint URL %q: want https://host[:port]/path", cfg.URL)
	}
	if !cfg.EndpointID.IsZero() && !cfg.EndpointID.MemberOf(cfg.TrustDomain) {
		return nil, fmt.Errorf("bundle relay: upstream endpoint ID %s is not in trust domain %s", cfg.EndpointID, cfg.TrustDomain)
	}
	if cfg.EndpointID.IsZero() && cfg.Bootstrap != nil {
		return nil, errors.New("bundle relay: a bootstrap bundle is for an https_spiffe upstream: set its endpoint SPIFFE ID too")
	}
	if cfg.Bootstrap != nil && cfg.Bootstrap.TrustDomain() != cfg.TrustDomain {
		return nil, fmt.Errorf("bundle relay: the bootstrap bundle is for %s, not %s", cfg.Bootstrap.TrustDomain(), cfg.TrustDomain)
	}
	switch {
	case cfg.Poll == 0:
		cfg.Poll = DefaultPoll
	case cfg.Poll < MinPoll || cfg.Poll > MaxPoll:
		return nil, fmt.Errorf("bundle relay: poll interval %s is out of range: use %s to %s", cfg.Poll, MinPoll, MaxPoll)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	r := &Relay{cfg: cfg, log: cfg.Log, now: time.Now}
	if cfg.CacheFile != "" {
		b, err := readCache(cfg.CacheFile, cfg.TrustDomain)
		if err != nil {
			return nil, err
		}
		if b != nil {
			h, err := r.check(b, nil)
			if err != nil {
				return nil, fmt.Errorf("bundle relay: cache file %s: %w (delete it to start from the upstream's bundle)", cfg.CacheFile, err)
			}
			r.cur.Store(h)
			r.log.Info("bundle relay: serving the cached bundle until the upstream answers", "cache_file", cfg.CacheFile, "sequence", h.tb.Sequence, "roots", len(h.tb.Roots))
		}
	}
	return r, nil
}

// Bundle returns the bundle to serve, false while the relay holds none. It
// is the source for spiffe.NewHandler.
func (r *Relay) Bundle() (ca.TrustBundle, bool) {
	h := r.cur.Load()
	if h == nil {
		return ca.TrustBundle{}, false
	}
	return h.tb, true
}

// Sequence returns the sequence number of the bundle held, false when none.
func (r *Relay) Sequence() (uint64, bool) {
	h := r.cur.Load()
	if h == nil {
		return 0, false
	}
	return h.tb.Sequence, true
}

// Run fetches the upstream bundle at once and then every Poll until ctx
// ends. Failures are logged and leave the bundle held in service. It
// returns nil when ctx ends.
func (r *Relay) Run(ctx context.Context) error {
	for {
		_, _ = r.Refresh(ctx)
		wait := r.cfg.Poll + rand.N(r.cfg.Poll/10+1)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Refresh fetches the upstream bundle once and keeps it when it passes the
// checks. It reports whether the bundle served changed. Every error is a
// *bundle.Error (bundle.ReasonOf tells why), and leaves the bundle held in
// service.
func (r *Relay) Refresh(ctx context.Context) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed, err := r.refresh(ctx)
	r.noteOutcome(err)
	return changed, err
}

func (r *Relay) refresh(ctx context.Context) (bool, error) {
	cur := r.cur.Load()
	auth := federation.WebPKIAuth(r.cfg.Roots)
	if !r.cfg.EndpointID.IsZero() {
		var src *spiffebundle.Bundle
		switch {
		case cur != nil:
			src = cur.bundle
		case r.cfg.Bootstrap != nil:
			src = r.cfg.Bootstrap
		default:
			return false, bundle.Errorf(bundle.ReasonNoBundle, "no bundle to authenticate the https_spiffe upstream %s: give a bootstrap bundle", r.cfg.URL)
		}
		auth = federation.SPIFFEAuth(src, r.cfg.EndpointID)
	}
	b, raw, err := federation.FetchBundle(federation.WithUserAgent(ctx, UserAgent), r.cfg.TrustDomain, r.cfg.URL, auth, 0)
	if err != nil {
		return false, err
	}
	h, err := r.check(b, cur)
	if err != nil {
		return false, err
	}
	if h == nil { // the bundle held, again
		return false, nil
	}
	h.fetched = r.now()
	// Write the cache first: a relay that served a bundle it could not
	// record would accept an older one after a restart.
	if r.cfg.CacheFile != "" {
		if err := writeCache(r.cfg.CacheFile, raw); err != nil {
			return false, bundle.Errorf(bundle.ReasonStore, "bundle relay: %v; still serving sequence %d", err, seqOf(cur))
		}
	}
	r.cur.Store(h)
	r.log.Info("bundle relay: serving a new bundle", "trust_domain", r.cfg.TrustDomain.String(), "sequence", h.tb.Sequence, "previous_sequence", seqOf(cur), "roots", len(h.tb.Roots))
	return true, nil
}

// check returns what serving b would hold, nil when b is the bundle held
// already, or why b may not replace cur.
func (r *Relay) check(b *spiffebundle.Bundle, cur *held) (*held, error) {
	if b.TrustDomain() != r.cfg.TrustDomain {
		return nil, bundle.Errorf(bundle.ReasonWrongTrustDomain, "the bundle is for %s, not %s", b.TrustDomain(), r.cfg.TrustDomain)
	}
	seq, ok := b.SequenceNumber()
	if !ok {
		return nil, bundle.Errorf(bundle.ReasonParse, "the bundle has no spiffe_sequence: the relay serves a meshroot bundle endpoint's bundle, which always carries one")
	}
	roots := b.X509Authorities()
	if len(roots) == 0 {
		return nil, bundle.Errorf(bundle.ReasonEmpty, "the bundle holds no X.509 authority")
	}
	if cur != nil {
		switch {
		case seq < cur.tb.Sequence:
			return nil, bundle.Errorf(bundle.ReasonLowerSequence, "the upstream serves sequence %d, lower than the %d held: refused as a rollback (if the upstream's state was restored from a backup on purpose, delete the relay's cache file and restart it)", seq, cur.tb.Sequence)
		case seq == cur.tb.Sequence:
			if !slices.EqualFunc(roots, cur.tb.Roots, (*x509.Certificate).Equal) {
				return nil, bundle.Errorf(bundle.ReasonLowerSequence, "the upstream serves other roots under the sequence %d held: refused (a meshroot endpoint changes the sequence with every change of its roots)", seq)
			}
			// The same roots: a new refresh hint (the server's
			// refreshHint setting changed) is taken, as it changes no
			// trust; the same document is no change at all.
			if hint, _ := b.RefreshHint(); hint == cur.tb.RefreshHint {
				return nil, nil
			}
		}
	}
	hint, _ := b.RefreshHint()
	return &held{
		bundle: b,
		tb:     ca.TrustBundle{TrustDomain: r.cfg.TrustDomain.String(), Roots: roots, Sequence: seq, RefreshHint: hint},
	}, nil
}

// noteOutcome logs a failure when a run of failures starts, when its reason
// changes and then once every failureLogEvery, and the recovery.
func (r *Relay) noteOutcome(err error) {
	now := r.now()
	if err == nil {
		if r.failing != "" {
			r.log.Info("bundle relay: the upstream answers again", "url", r.cfg.URL, "failing_for", now.Sub(r.failSince).Round(time.Second).String())
			r.failing = ""
		}
		return
	}
	reason := bundle.ReasonOf(err)
	if reason == bundle.ReasonCanceled {
		return
	}
	if r.failing == "" {
		r.failSince = now
	}
	if reason != r.failing || now.Sub(r.lastLogged) >= failureLogEvery {
		level := slog.LevelWarn
		if reason == bundle.ReasonLowerSequence || reason == bundle.ReasonWrongTrustDomain || reason == bundle.ReasonTLS {
			level = slog.LevelError // what the upstream served is refused, not just unreachable
		}
		r.log.Log(context.Background(), level, "bundle relay: the upstream's bundle is not taken; still serving the bundle held",
			"url", r.cfg.URL, "reason", reason, "error", err.Error(), "sequence_held", seqOf(r.cur.Load()), "failing_since", r.failSince.UTC().Format(time.RFC3339))
		r.lastLogged = now
	}
	r.failing = reason
}

func seqOf(h *held) any {
	if h == nil {
		return "none"
	}
	return h.tb.Sequence
}
