package federation

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshroot/meshroot/federation/bundle"
	"github.com/meshroot/meshroot/store"
)

// Bundle is the held (last good) bundle of a foreign trust domain, in the
// form the agents receive it: its X.509 authorities and its sequence.
type Bundle struct {
	TrustDomain string
	Roots       []*x509.Certificate
	Sequence    uint64
}

// maxHeldCache bounds the parsed-bundle cache; it is emptied when full.
const maxHeldCache = 1024

// Held reads the peers' held bundles from the store for delivery to the
// meshes, parsing each stored version once: the bundle hub asks for every
// bundle every few seconds. Every stored bundle goes through bundle.Parse
// again, so that a bundle stored by an older meshroot, or written to the
// store behind its back, is held to today's checks.
type Held struct {
	st  store.FederationReader
	log *slog.Logger

	mu    sync.Mutex
	cache map[string]heldEntry
}

// heldEntry is one parsed stored version: its bundle, or why it is
// withheld.
type heldEntry struct {
	b      *Bundle
	reason string
	err    error
}

// NewHeld returns a Held over st (log nil: slog.Default()).
func NewHeld(st store.FederationReader, log *slog.Logger) *Held {
	if log == nil {
		log = slog.Default()
	}
	return &Held{st: st, log: log, cache: map[string]heldEntry{}}
}

// Bundles returns the held bundle of every peer that has one, ordered by
// trust domain, for the agents of trust domain own. It withholds, logging
// once per stored version and setting meshroot_federation_withheld:
//   - a peer whose trust domain is own (a peer must never supply roots for
//     our own trust domain; such a peer can only exist if it was added
//     before the trust domain was known), and every peer while own is not
//     known yet;
//   - a stored bundle that no longer passes bundle.Parse (wrong trust
//     domain, over the size a mesh may hold, unreadable).
func (h *Held) Bundles(ctx context.Context, own string) ([]Bundle, error) {
	peers, err := h.st.ListFederationPeers(ctx)
	if err != nil {
		return nil, err
	}
	var out []Bundle
	withheld := map[[2]string]bool{}
	for _, p := range peers {
		if len(p.Bundle) == 0 {
			continue
		}
		e := h.parse(p, own)
		if e.b != nil {
			out = append(out, *e.b)
			continue
		}
		withheld[[2]string{p.TrustDomain, e.reason}] = true
	}
	withheldGauge.Reset()
	for k := range withheld {
		withheldGauge.WithLabelValues(k[0], k[1]).Set(1)
	}
	return out, nil
}

// parse parses p's stored bundle, once per stored version and own trust
// domain.
func (h *Held) parse(p store.FederationPeer, own string) heldEntry {
	key := fmt.Sprint(p.TrustDomain, "|", own, "|", p.BundleUpdatedAt.Format(time.RFC3339Nano), "|", p.Sequence, "|", len(p.Bundle))
	h.mu.Lock()
	e, ok := h.cache[key]
	h.mu.Unlock()
	if ok {
		return e
	}
	e = parseHeld(p, own)
	if e.b == nil {
		h.log.Error("federation: held bundle withheld from the meshes", "trust_domain", p.TrustDomain, "reason", e.reason, "error", e.err)
	}
	h.mu.Lock()
	if len(h.cache) >= maxHeldCache {
		h.cache = map[string]heldEntry{}
	}
	h.cache[key] = e
	h.mu.Unlock()
	return e
}

func parseHeld(p store.FederationPeer, own string) heldEntry {
	if err := checkNotOwn(p.TrustDomain, own); err != nil {
		return heldEntry{reason: bundle.ReasonOf(err), err: err}
	}
	td, err := spiffeid.TrustDomainFromString(p.TrustDomain)
	if err != nil {
		return heldEntry{reason: bundle.ReasonConfig, err: fmt.Errorf("trust domain %q: %v", p.TrustDomain, err)}
	}
	b, err := bundle.Parse(td, p.Bundle, bundle.Options{})
	if err != nil {
		return heldEntry{reason: bundle.ReasonOf(err), err: fmt.Errorf("stored bundle of %s: %w", p.TrustDomain, err)}
	}
	return heldEntry{b: &Bundle{TrustDomain: p.TrustDomain, Roots: b.X509Authorities(), Sequence: p.Sequence}}
}

// checkNotOwn refuses a peer of trust domain own, and any peer while own
// is not known ("").
func checkNotOwn(peer, own string) error {
	if own == "" {
		return bundle.Errorf(bundle.ReasonOwnTrustDomain, "this trust domain is not known yet (no root): %s cannot be told apart from it", peer)
	}
	if peer == own {
		return bundle.Errorf(bundle.ReasonOwnTrustDomain, "%s is this trust domain: a federation peer may not supply its roots; remove the peer", peer)
	}
	return nil
}

var withheldGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "meshroot_federation_withheld",
	Help: "1 for each federation peer whose held bundle is not delivered to the meshes, by reason (own_trust_domain, too_large, wrong_trust_domain, parse, ...).",
}, []string{"trust_domain", "reason"})
