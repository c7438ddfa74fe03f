package server

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// Rotation phases exported by meshroot_rotation_phase: where the trust
// domain is between `meshroot root prepare`, `activate` and `retire`.
const (
	// PhaseNone: one active root, no rotation under way (next: prepare).
	PhaseNone = "none"
	// PhasePrepared: a new root is in the bundle, not signing yet (next:
	// activate).
	PhasePrepared = "prepared"
	// PhaseActivated: the new root signs, the old one is retiring but
	// still trusted (next: retire).
	PhaseActivated = "activated"
)

// DefaultFleetCacheTTL is how long one reading of the store serves
// scrapes: several Prometheus servers scraping at once cost one reading.
const DefaultFleetCacheTTL = 5 * time.Second

// fleetReadTimeout bounds one reading of the store during a scrape.
const fleetReadTimeout = 10 * time.Second

func fleetDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("meshroot_"+name, help, labels, nil)
}

// The fleet's series: one per cluster, per root in the trust bundle, per
// federation peer; never one per certificate issued.
var (
	descClusterInfo = fleetDesc("cluster_info",
		"Always 1: a registered cluster, its trust domain and the root of the intermediate it last reported running (root_id empty before the first report).",
		"cluster", "trust_domain", "root_id")
	descClusterExpiry = fleetDesc("cluster_intermediate_expiry_timestamp_seconds",
		"NotAfter of the intermediate the cluster last reported running, in seconds since the epoch (absent before the first report).", "cluster")
	descClusterSequence = fleetDesc("cluster_bundle_sequence",
		"Trust bundle sequence the cluster last reported applied.", "cluster")
	descClusterContact = fleetDesc("cluster_last_contact_timestamp_seconds",
		"When the cluster's agent last reported its status, in seconds since the epoch (absent if it never did).", "cluster")
	descClusterRegistered = fleetDesc("cluster_registered_timestamp_seconds",
		"When the cluster was registered, in seconds since the epoch.", "cluster")
	descClusterQuarantined = fleetDesc("cluster_quarantined",
		"1 when the cluster is quarantined (its renewals refused), else 0.", "cluster")
	descQuarantinePending = fleetDesc("quarantine_pending_clusters",
		"Per quarantined cluster: how many other clusters have not yet applied the CRLs that list its intermediates (0: enforced everywhere).", "cluster")
	descRootExpiry = fleetDesc("root_expiry_timestamp_seconds",
		"Earliest NotAfter in the chain of a root in the trust bundle (its signing authority and every CA above it), in seconds since the epoch.",
		"root_id", "trust_domain")
	descRootState = fleetDesc("root_state",
		"Always 1: the state of a root in the trust bundle (prepared, active or retiring).", "root_id", "trust_domain", "state")
	descRootStateChanged = fleetDesc("root_state_changed_timestamp_seconds",
		"When a root in the trust bundle entered its current state, in seconds since the epoch.", "root_id", "trust_domain")
	descRotationPhase = fleetDesc("rotation_phase",
		"Always 1: the root rotation phase (none, prepared or activated).", "phase")
	descRotationSince = fleetDesc("rotation_phase_started_timestamp_seconds",
		"When the current rotation phase began, in seconds since the epoch.", "phase")
	descPeerSuccess = fleetDesc("federation_peer_last_success_timestamp_seconds",
		"When the peer's bundle endpoint was last fetched successfully, in seconds since the epoch (absent if never).", "trust_domain")
	descPeerAttempt = fleetDesc("federation_peer_last_attempt_timestamp_seconds",
		"When the peer's bundle endpoint was last tried, in seconds since the epoch (absent if never).", "trust_domain")
	descPeerCreated = fleetDesc("federation_peer_created_timestamp_seconds",
		"When the federation peer was registered, in seconds since the epoch.", "trust_domain")
	descPeerSequence = fleetDesc("federation_peer_bundle_sequence",
		"spiffe_sequence of the peer's bundle held in the store (0 when absent or none held).", "trust_domain")
	descClusterIstiod = fleetDesc("cluster_istiod_confirmed",
		"1 when the cluster's agent last confirmed istiod serves what the cacerts Secret holds (state loaded), 0 when it reported pending, stale or unconfirmed; absent when it never reported istiod's state.", "cluster")
	descClusterCRLNext = fleetDesc("cluster_crl_next_update_timestamp_seconds",
		"nextUpdate of the CRL the cluster's agent last sent for the intermediate it runs with, in seconds since the epoch (absent before the first).", "cluster")
	descCRLNext = fleetDesc("crl_next_update_timestamp_seconds",
		"nextUpdate of the current CRL of a root in the trust bundle, in seconds since the epoch (absent when meshroot signs none: an upstream root).", "root_id", "trust_domain")
	descFleetOK = fleetDesc("fleet_collect_success",
		"1 when the last reading of the store for the fleet metrics succeeded, 0 when it failed (the other fleet series are then missing).")
)

// FleetCollector exports, read from the store at scrape time, what expires
// when across the fleet: each cluster's intermediate, each root, the
// rotation phase, each federation peer's freshness. One reading serves
// the scrapes of the next cacheTTL.
type FleetCollector struct {
	st       FleetReader
	cacheTTL time.Duration
	log      *slog.Logger
	now      func() time.Time

	quarantines func(context.Context) ([]ca.QuarantineStatus, error)

	mu     sync.Mutex
	at     time.Time
	cached []prometheus.Metric
}

// WithQuarantines makes the collector export which clusters are
// quarantined and how many others do not enforce it yet, from list
// (ca.Service.ListQuarantines).
func (c *FleetCollector) WithQuarantines(list func(context.Context) ([]ca.QuarantineStatus, error)) *FleetCollector {
	c.quarantines = list
	return c
}

// FleetReader is what the fleet collector reads at scrape time.
type FleetReader interface {
	ListClusters(ctx context.Context) ([]store.Cluster, error)
	GetIntermediate(ctx context.Context, serial string) (store.Intermediate, error)
	ListRoots(ctx context.Context) ([]store.Root, error)
	ListFederationPeers(ctx context.Context) ([]store.FederationPeer, error)
	ListQuarantines(ctx context.Context) ([]store.Quarantine, error)
	GetCRL(ctx context.Context, issuer string) (store.CRL, error)
}

// NewFleetCollector returns a collector over st; cacheTTL 0 takes
// DefaultFleetCacheTTL, a negative one reads the store at every scrape.
func NewFleetCollector(st FleetReader, cacheTTL time.Duration, log *slog.Logger) *FleetCollector {
	if cacheTTL == 0 {
		cacheTTL = DefaultFleetCacheTTL
	}
	if log == nil {
		log = slog.Default()
	}
	return &FleetCollector{st: st, cacheTTL: cacheTTL, log: log, now: time.Now}
}

// Describe sends the descriptors of every fleet series.
func (c *FleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descClusterInfo, descClusterExpiry, descClusterSequence, descClusterContact,
		descClusterRegistered, descClusterQuarantined, descQuarantinePending, descRootExpiry, descRootState, descRootStateChanged,
		descRotationPhase, descRotationSince, descPeerSuccess, descPeerAttempt, descPeerCreated, descPeerSequence,
		descClusterIstiod, descClusterCRLNext, descCRLNext, descFleetOK} {
		ch <- d
	}
}

// Collect sends the fleet series, reading the store when the cached
// reading is older than the cache TTL. A failed reading is logged and
// exported as meshroot_fleet_collect_success 0, so that the rest of the
// scrape still works.
func (c *FleetCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); c.cached == nil || now.Sub(c.at) >= c.cacheTTL {
		ctx, cancel := context.WithTimeout(context.Background(), fleetReadTimeout)
		ms, err := c.read(ctx)
		cancel()
		if err != nil {
			c.log.Warn("fleet metrics: cannot read the store", "error", err)
			ms = []prometheus.Metric{prometheus.MustNewConstMetric(descFleetOK, prometheus.GaugeValue, 0)}
		}
		c.cached, c.at = ms, now
	}
	for _, m := range c.cached {
		ch <- m
	}
}

// read builds every fleet series from one pass over the store: one query
// for clusters, one for quarantines, two per cluster (its reported
// intermediate and that intermediate's CRL), one for roots, one per root
// in the bundle for its CRL, and one for federation peers.
func (c *FleetCollector) read(ctx context.Context) ([]prometheus.Metric, error) {
	var out []prometheus.Metric
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		out = append(out, prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...))
	}
	stamp := func(d *prometheus.Desc, t time.Time, labels ...string) {
		if !t.IsZero() {
			gauge(d, float64(t.UnixMilli())/1000, labels...)
		}
	}
	clusters, err := c.st.ListClusters(ctx)
	if err != nil {
		return nil, err
	}
	qs, err := c.st.ListQuarantines(ctx)
	if err != nil {
		return nil, err
	}
	quarantined := make(map[string]bool, len(qs))
	for _, q := range qs {
		quarantined[q.Cluster] = true
	}
	if c.quarantines != nil {
		qs, err := c.quarantines(ctx)
		if err != nil {
			return nil, err
		}
		for _, q := range qs {
			gauge(descQuarantinePending, float64(len(q.Pending())), q.Cluster)
		}
	}
	for _, cl := range clusters {
		rootID := ""
		if serial := cl.Status.IntermediateSerial; serial != "" {
			in, err := c.st.GetIntermediate(ctx, serial)
			if err != nil && ctx.Err() != nil {
				return nil, err
			}
			if err == nil {
				rootID = in.RootID
				stamp(descClusterExpiry, in.NotAfter, cl.Name)
			}
			crl, err := c.st.GetCRL(ctx, ca.ClusterCRLIssuer(cl.Name, serial))
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return nil, err
			}
			stamp(descClusterCRLNext, crl.NextUpdate, cl.Name)
		}
		gauge(descClusterInfo, 1, cl.Name, cl.TrustDomain, rootID)
		gauge(descClusterSequence, float64(cl.Status.BundleSequence), cl.Name)
		stamp(descClusterContact, cl.Status.LastContact, cl.Name)
		stamp(descClusterRegistered, cl.CreatedAt, cl.Name)
		gauge(descClusterQuarantined, boolGauge(quarantined[cl.Name]), cl.Name)
		if st := cl.Status.Istiod.State; st != "" {
			gauge(descClusterIstiod, boolGauge(st == store.IstiodLoaded), cl.Name)
		}
	}
	roots, err := c.st.ListRoots(ctx)
	if err != nil {
		return nil, err
	}
	phase, since := rotationPhase(roots)
	gauge(descRotationPhase, 1, phase)
	stamp(descRotationSince, since, phase)
	for _, r := range roots {
		if !r.State.InBundle() {
			continue
		}
		gauge(descRootState, 1, r.ID, r.TrustDomain, string(r.State))
		stamp(descRootStateChanged, r.StateChangedAt, r.ID, r.TrustDomain)
		stamp(descRootExpiry, chainExpiry(r), r.ID, r.TrustDomain)
		crl, err := c.st.GetCRL(ctx, ca.RootCRLIssuer(r.ID))
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		stamp(descCRLNext, crl.NextUpdate, r.ID, r.TrustDomain)
	}
	peers, err := c.st.ListFederationPeers(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range peers {
		stamp(descPeerSuccess, p.Status.LastSuccess, p.TrustDomain)
		stamp(descPeerAttempt, p.Status.LastAttempt, p.TrustDomain)
		stamp(descPeerCreated, p.CreatedAt, p.TrustDomain)
		gauge(descPeerSequence, float64(p.Sequence), p.TrustDomain)
	}
	gauge(descFleetOK, 1)
	return out, nil
}

// boolGauge is 1 for true, 0 for false.
func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// rotationPhase says where the rotation is, and since when: a prepared
// root means waiting for activate, a retiring one waiting for retire.
func rotationPhase(roots []store.Root) (string, time.Time) {
	var phase string
	var since time.Time
	for _, r := range roots {
		switch {
		case r.State == store.RootPrepared:
			return PhasePrepared, r.StateChangedAt
		case r.State == store.RootRetiring:
			phase, since = PhaseActivated, r.StateChangedAt
		case r.State == store.RootActive && phase == "":
			since = r.StateChangedAt
		}
	}
	if phase == "" {
		phase = PhaseNone
	}
	return phase, since
}

// chainExpiry is when the root stops being usable: the earliest NotAfter
// of its signing authority and every CA above it.
func chainExpiry(r store.Root) time.Time {
	t := r.NotAfter
	certs, err := ca.ParseCerts(r.ChainPEM)
	if err != nil {
		return t
	}
	for _, c := range certs {
		if t.IsZero() || c.NotAfter.Before(t) {
			t = c.NotAfter
		}
	}
	return t
}
