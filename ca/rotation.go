package ca

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/meshroot/meshroot/store"
)

// DefaultWorkloadCertTTL is how long workload certificates signed under a
// retiring root may stay valid after the last cluster moved off it: istiod
// issues 24-hour workload certificates by default.
const DefaultWorkloadCertTTL = 24 * time.Hour

// Blocker is why a rotation phase cannot proceed yet, for one cluster (or
// for the trust domain when Cluster is empty).
type Blocker struct {
	Cluster string `json:"cluster,omitempty"`
	Reason  string `json:"reason"`
}

// PhaseRequest carries the options every rotation phase takes.
type PhaseRequest struct {
	// DryRun reports what would change, and the blockers, changing nothing.
	DryRun bool
	// Force proceeds despite blockers; it is audited with them.
	Force bool
	// WorkloadCertTTL is retire's wait after the last cluster switched
	// (DefaultWorkloadCertTTL when zero).
	WorkloadCertTTL time.Duration
}

// PhaseResult says what a phase did, or would do.
type PhaseResult struct {
	Phase    string    `json:"phase"`
	Changes  []string  `json:"changes"`
	Blockers []Blocker `json:"blockers,omitempty"`
	// LosingTrust lists clusters that would stop trusting a root still
	// used by their workloads (what --force would break).
	LosingTrust []string `json:"losing_trust,omitempty"`
	DryRun      bool     `json:"dry_run"`
	Forced      bool     `json:"forced"`
	Done        bool     `json:"done"`
}

func clusterNames(bs []Blocker) []string {
	var out []string
	for _, b := range bs {
		if b.Cluster != "" {
			out = append(out, b.Cluster)
		}
	}
	return out
}

// ActivateRoot is phase 2: once every registered cluster has applied a
// trust bundle that contains the prepared root, the prepared root becomes
// active (new intermediates come from it; agents re-request at once) and
// the active one becomes retiring (still trusted).
func (s *Service) ActivateRoot(ctx context.Context, req PhaseRequest) (PhaseResult, error) {
	actor := ActorFrom(ctx)
	res, err := s.activate(ctx, actor, req)
	if err != nil {
		return res, s.auditRefusal(ctx, actor, "root.activate", "", err)
	}
	return res, nil
}

func (s *Service) activate(ctx context.Context, actor Actor, req PhaseRequest) (PhaseResult, error) {
	if req.DryRun {
		return s.dryRun(ctx, "activate", s.planActivate)
	}
	return s.apply(ctx, actor, cmdActivate, s.planActivate, req.Force, nil)
}

// planActivate is activate's gate and changes, read from r.
func (s *Service) planActivate(ctx context.Context, r rotationReader) (*plan, error) {
	p := &plan{res: PhaseResult{Phase: "activate"}, gated: true}
	roots, err := r.ListRoots(ctx)
	if err != nil {
		return p, err
	}
	prepared := rootsByState(roots, store.RootPrepared)
	if len(prepared) == 0 {
		if len(rootsByState(roots, store.RootRetiring)) > 0 {
			p.noop, p.res.Done = true, true // already activated: resuming is a no-op
			p.res.Changes = []string{"nothing to do: the new root is already active; next: meshroot root retire"}
			return p, nil
		}
		return p, refusef("no prepared root: run `meshroot root prepare` first")
	}
	a, err := oneActive(roots)
	if err != nil {
		return p, err
	}
	pr := prepared[0]
	clusters, err := r.ListClusters(ctx)
	if err != nil {
		return p, err
	}
	for _, c := range clusters {
		if c.Status.BundleSequence < pr.AddedSequence {
			last := "never"
			if !c.Status.LastContact.IsZero() {
				last = c.Status.LastContact.UTC().Format(time.RFC3339)
			}
			p.res.Blockers = append(p.res.Blockers, Blocker{Cluster: c.Name, Reason: fmt.Sprintf(
				"has applied trust bundle %d, needs %d (the one with root %s); last contact %s", c.Status.BundleSequence, pr.AddedSequence, short(pr.ID), last)})
		} else if why := istiodBlocker(c, pr.AddedSequence, ""); why != "" {
			p.res.Blockers = append(p.res.Blockers, Blocker{Cluster: c.Name, Reason: why})
		}
	}
	p.res.LosingTrust = clusterNames(p.res.Blockers)
	p.res.Changes = []string{
		fmt.Sprintf("root %s: prepared -> active (signs new intermediates)", pr.ID),
		fmt.Sprintf("root %s: active -> retiring (still trusted)", a.ID),
		fmt.Sprintf("%d cluster(s) re-request their intermediate", len(clusters)),
	}
	p.moves = []move{{pr.ID, store.RootPrepared, store.RootActive}, {a.ID, store.RootActive, store.RootRetiring}}
	p.target, p.details = pr.ID, map[string]any{"previous_root": a.ID}
	return p, nil
}

// RetireRoot is phase 3: once every cluster's intermediate chains to the
// active root and the workload certificate lifetime has passed since the
// last cluster switched, the retiring root leaves the trust bundle.
func (s *Service) RetireRoot(ctx context.Context, req PhaseRequest) (PhaseResult, error) {
	actor := ActorFrom(ctx)
	res, err := s.retire(ctx, actor, req)
	if err != nil {
		return res, s.auditRefusal(ctx, actor, "root.retire", "", err)
	}
	return res, nil
}

func (s *Service) retire(ctx context.Context, actor Actor, req PhaseRequest) (PhaseResult, error) {
	ttl := req.WorkloadCertTTL
	if ttl == 0 {
		ttl = DefaultWorkloadCertTTL
	}
	fn := func(ctx context.Context, r rotationReader) (*plan, error) { return s.planRetire(ctx, r, ttl) }
	if req.DryRun {
		return s.dryRun(ctx, "retire", fn)
	}
	return s.apply(ctx, actor, cmdRetire, fn, req.Force, nil)
}

// planRetire is retire's gate and changes, read from r.
func (s *Service) planRetire(ctx context.Context, r rotationReader, ttl time.Duration) (*plan, error) {
	p := &plan{res: PhaseResult{Phase: "retire"}, gated: true}
	roots, err := r.ListRoots(ctx)
	if err != nil {
		return p, err
	}
	retiring := rootsByState(roots, store.RootRetiring)
	if len(retiring) == 0 {
		if len(rootsByState(roots, store.RootPrepared)) > 0 {
			return p, refusef("the new root is still prepared: run `meshroot root activate` first")
		}
		p.noop, p.res.Done = true, true
		p.res.Changes = []string{"nothing to do: no retiring root"}
		return p, nil
	}
	a, err := oneActive(roots)
	if err != nil {
		return p, err
	}
	clusters, err := r.ListClusters(ctx)
	if err != nil {
		return p, err
	}
	var lastSwitch time.Time
	for _, c := range clusters {
		if c.Status.IntermediateSerial == "" {
			p.res.Blockers = append(p.res.Blockers, Blocker{Cluster: c.Name, Reason: "has no intermediate yet"})
			continue
		}
		in, err := r.GetIntermediate(ctx, c.Status.IntermediateSerial)
		if err != nil {
			p.res.Blockers = append(p.res.Blockers, Blocker{Cluster: c.Name, Reason: fmt.Sprintf("its intermediate %s is unknown: %v", c.Status.IntermediateSerial, err)})
			continue
		}
		if in.RootID != a.ID {
			p.res.Blockers = append(p.res.Blockers, Blocker{Cluster: c.Name, Reason: fmt.Sprintf("its intermediate %s still chains to root %s", short(in.Serial), short(in.RootID))})
			continue
		}
		if why := istiodBlocker(c, 0, in.Serial); why != "" {
			p.res.Blockers = append(p.res.Blockers, Blocker{Cluster: c.Name, Reason: why})
			continue
		}
		first, err := firstUnder(ctx, r, c.Name, a.ID)
		if err != nil {
			return p, err
		}
		if first.After(lastSwitch) {
			lastSwitch = first
		}
	}
	p.res.LosingTrust = clusterNames(p.res.Blockers)
	if wait := lastSwitch.Add(ttl).Sub(s.now()); len(p.res.Blockers) == 0 && wait > 0 {
		p.res.Blockers = append(p.res.Blockers, Blocker{Reason: fmt.Sprintf(
			"workload certificates signed before the last cluster switched (%s) may be valid until %s (--workload-cert-ttl %s): wait %s",
			lastSwitch.UTC().Format(time.RFC3339), lastSwitch.Add(ttl).UTC().Format(time.RFC3339), ttl, wait.Round(time.Second))})
	}
	ids := make([]string, len(retiring))
	for i, rr := range retiring {
		ids[i] = rr.ID
		p.moves = append(p.moves, move{rr.ID, store.RootRetiring, store.RootRetired})
		p.res.Changes = append(p.res.Changes, fmt.Sprintf("root %s: retiring -> retired (leaves the trust bundle)", rr.ID))
	}
	p.res.Changes = append(p.res.Changes, "trust bundle sequence +1; agents drop the old root from root-cert.pem")
	p.bump, p.target, p.details = true, strings.Join(ids, ","), map[string]any{"workload_cert_ttl": ttl.String()}
	return p, nil
}

// firstUnder is when cluster got its first intermediate from root.
func firstUnder(ctx context.Context, r interface {
	ListIntermediates(ctx context.Context, cluster string) ([]store.Intermediate, error)
}, cluster, rootID string) (time.Time, error) {
	list, err := r.ListIntermediates(ctx, cluster)
	if err != nil {
		return time.Time{}, err
	}
	for _, in := range list { // oldest first
		if in.RootID == rootID {
			return in.CreatedAt, nil
		}
	}
	return time.Time{}, nil
}

// RollbackPrepared undoes `root prepare`: the prepared root leaves the
// bundle (state retired) before it ever signed anything.
func (s *Service) RollbackPrepared(ctx context.Context, req PhaseRequest) (PhaseResult, error) {
	actor := ActorFrom(ctx)
	if req.DryRun {
		return s.dryRun(ctx, "rollback", planRollback)
	}
	res, err := s.apply(ctx, actor, cmdRollback, planRollback, false, nil)
	if err != nil {
		return res, s.auditRefusal(ctx, actor, string(cmdRollback), "", err)
	}
	return res, nil
}

// planRollback is rollback's gate and changes, read from r.
func planRollback(ctx context.Context, r rotationReader) (*plan, error) {
	p := &plan{res: PhaseResult{Phase: "rollback"}}
	roots, err := r.ListRoots(ctx)
	if err != nil {
		return p, err
	}
	prepared := rootsByState(roots, store.RootPrepared)
	if len(prepared) == 0 {
		return p, refusef("no prepared root to roll back (after activate, rotate forward instead)")
	}
	pr := prepared[0]
	p.res.Changes = []string{fmt.Sprintf("root %s: prepared -> retired (leaves the trust bundle)", pr.ID), "trust bundle sequence +1"}
	p.moves = []move{{pr.ID, store.RootPrepared, store.RootRetired}}
	p.bump, p.target = true, pr.ID
	return p, nil
}

// ClusterRotationStatus is one cluster's part in a rotation.
type ClusterRotationStatus struct {
	Cluster              string    `json:"cluster"`
	BundleSequence       uint64    `json:"bundle_sequence_applied"`
	IntermediateSerial   string    `json:"intermediate_serial,omitempty"`
	IntermediateRoot     string    `json:"intermediate_root,omitempty"`
	IntermediateNotAfter time.Time `json:"intermediate_not_after"`
	LastContact          time.Time `json:"last_contact"`
	// Gate is the gate in force (secret or istiod); Istiod what the agent
	// last confirmed istiod serves.
	Gate     string             `json:"gate"`
	Istiod   store.IstiodStatus `json:"istiod"`
	Blockers []string           `json:"blockers,omitempty"`
}

// RotationStatus is the state of every root and every cluster, with what
// blocks the next phase.
type RotationStatus struct {
	Roots          []store.Root            `json:"-"`
	BundleSequence uint64                  `json:"bundle_sequence"`
	NextPhase      string                  `json:"next_phase"`
	Clusters       []ClusterRotationStatus `json:"clusters"`
	Blockers       []Blocker               `json:"blockers,omitempty"`
	// Replicas are the servers sharing the store and which one leads
	// (empty with a store one server uses).
	Replicas []ReplicaStatus `json:"replicas,omitempty"`
	// Quarantines are the quarantined clusters and, per other cluster,
	// whether it has applied the CRLs that list them.
	Quarantines []QuarantineStatus `json:"-"`
}

// RotationStatus reports, per cluster, the bundle applied, the root of its
// intermediate, its expiry, the last contact, and what blocks the next
// phase (computed as a dry run of it).
func (s *Service) RotationStatus(ctx context.Context, workloadCertTTL time.Duration) (RotationStatus, error) {
	var st RotationStatus
	roots, err := s.store.ListRoots(ctx)
	if err != nil {
		return st, err
	}
	st.Roots = roots
	if st.BundleSequence, err = s.store.BundleSequence(ctx); err != nil {
		return st, err
	}
	if st.Replicas, err = s.replicas(ctx); err != nil {
		return st, err
	}
	if st.Quarantines, err = s.ListQuarantines(ctx); err != nil {
		return st, err
	}
	var res PhaseResult
	switch {
	case len(rootsByState(roots, store.RootPrepared)) > 0:
		st.NextPhase = "activate"
		res, err = s.activate(ctx, "", PhaseRequest{DryRun: true})
	case len(rootsByState(roots, store.RootRetiring)) > 0:
		st.NextPhase = "retire"
		res, err = s.retire(ctx, "", PhaseRequest{DryRun: true, WorkloadCertTTL: workloadCertTTL})
	default:
		st.NextPhase = "prepare"
	}
	if err != nil {
		return st, err
	}
	byCluster := map[string][]string{}
	for _, b := range res.Blockers {
		if b.Cluster == "" {
			st.Blockers = append(st.Blockers, b)
		} else {
			byCluster[b.Cluster] = append(byCluster[b.Cluster], b.Reason)
		}
	}
	clusters, err := s.store.ListClusters(ctx)
	if err != nil {
		return st, err
	}
	for _, c := range clusters {
		cs := ClusterRotationStatus{
			Cluster: c.Name, BundleSequence: c.Status.BundleSequence, IntermediateSerial: c.Status.IntermediateSerial,
			LastContact: c.Status.LastContact, Blockers: byCluster[c.Name], Gate: EffectiveGate(c), Istiod: c.Status.Istiod,
		}
		if c.Status.IntermediateSerial != "" {
			if in, err := s.store.GetIntermediate(ctx, c.Status.IntermediateSerial); err == nil {
				cs.IntermediateRoot, cs.IntermediateNotAfter = in.RootID, in.NotAfter
			}
		}
		st.Clusters = append(st.Clusters, cs)
	}
	return st, nil
}

// ReportStatus records what a cluster's agent says it applied: the trust
// bundle sequence (at most the current one) and the serial of the
// intermediate it runs with (which must be that cluster's).
func (s *Service) ReportStatus(ctx context.Context, cluster string, bundleSequence uint64, serial string) error {
	return s.Report(ctx, StatusReport{Cluster: cluster, BundleSequence: bundleSequence, IntermediateSerial: serial})
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
