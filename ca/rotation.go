package ca

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/meshroot/meshroot/keys"
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

func rootsByState(roots []store.Root, st store.RootState) []store.Root {
	var out []store.Root
	for _, r := range roots {
		if r.State == st {
			out = append(out, r)
		}
	}
	return out
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

// gate turns blockers into a refusal unless forced or a dry run.
func gate(phase string, res *PhaseResult, req PhaseRequest) error {
	if len(res.Blockers) == 0 || req.DryRun {
		return nil
	}
	if req.Force {
		res.Forced = true
		return nil
	}
	var b strings.Builder
	for _, bl := range res.Blockers {
		if bl.Cluster != "" {
			fmt.Fprintf(&b, "; %s: %s", bl.Cluster, bl.Reason)
		} else {
			fmt.Fprintf(&b, "; %s", bl.Reason)
		}
	}
	return refusef("%s refused, %d blocker(s)%s (see `meshroot root status`; --force overrides and is audited)", phase, len(res.Blockers), b.String())
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
	res := PhaseResult{Phase: "activate", DryRun: req.DryRun}
	roots, err := s.store.ListRoots(ctx)
	if err != nil {
		return res, err
	}
	prepared, active := rootsByState(roots, store.RootPrepared), rootsByState(roots, store.RootActive)
	if len(prepared) == 0 {
		if len(rootsByState(roots, store.RootRetiring)) > 0 {
			res.Done = true // already activated: resuming is a no-op
			res.Changes = []string{"nothing to do: the new root is already active; next: meshroot root retire"}
			return res, nil
		}
		return res, refusef("no prepared root: run `meshroot root prepare` first")
	}
	if len(active) != 1 {
		return res, fmt.Errorf("expected one active root, found %d: the store is inconsistent", len(active))
	}
	p, a := prepared[0], active[0]
	clusters, err := s.store.ListClusters(ctx)
	if err != nil {
		return res, err
	}
	for _, c := range clusters {
		if c.Status.BundleSequence < p.AddedSequence {
			last := "never"
			if !c.Status.LastContact.IsZero() {
				last = c.Status.LastContact.UTC().Format(time.RFC3339)
			}
			res.Blockers = append(res.Blockers, Blocker{Cluster: c.Name, Reason: fmt.Sprintf(
				"has applied trust bundle %d, needs %d (the one with root %s); last contact %s", c.Status.BundleSequence, p.AddedSequence, short(p.ID), last)})
		}
	}
	res.LosingTrust = clusterNames(res.Blockers)
	res.Changes = []string{
		fmt.Sprintf("root %s: prepared -> active (signs new intermediates)", p.ID),
		fmt.Sprintf("root %s: active -> retiring (still trusted)", a.ID),
		fmt.Sprintf("%d cluster(s) re-request their intermediate", len(clusters)),
	}
	if err := gate("activate", &res, req); err != nil || req.DryRun {
		return res, err
	}
	now := s.now().UTC()
	err = s.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.UpdateRootState(ctx, p.ID, store.RootActive, now); err != nil {
			return err
		}
		if err := tx.UpdateRootState(ctx, a.ID, store.RootRetiring, now); err != nil {
			return err
		}
		return s.audit(ctx, tx, actor, "root.activate", p.ID, "ok", map[string]any{
			"previous_root": a.ID, "forced": res.Forced, "blockers": res.Blockers,
		})
	})
	res.Done = err == nil
	return res, err
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
	res := PhaseResult{Phase: "retire", DryRun: req.DryRun}
	ttl := req.WorkloadCertTTL
	if ttl == 0 {
		ttl = DefaultWorkloadCertTTL
	}
	roots, err := s.store.ListRoots(ctx)
	if err != nil {
		return res, err
	}
	retiring, active := rootsByState(roots, store.RootRetiring), rootsByState(roots, store.RootActive)
	if len(retiring) == 0 {
		if len(rootsByState(roots, store.RootPrepared)) > 0 {
			return res, refusef("the new root is still prepared: run `meshroot root activate` first")
		}
		res.Done = true
		res.Changes = []string{"nothing to do: no retiring root"}
		return res, nil
	}
	if len(active) != 1 {
		return res, fmt.Errorf("expected one active root, found %d: the store is inconsistent", len(active))
	}
	a := active[0]
	clusters, err := s.store.ListClusters(ctx)
	if err != nil {
		return res, err
	}
	var lastSwitch time.Time
	for _, c := range clusters {
		if c.Status.IntermediateSerial == "" {
			res.Blockers = append(res.Blockers, Blocker{Cluster: c.Name, Reason: "has no intermediate yet"})
			continue
		}
		in, err := s.store.GetIntermediate(ctx, c.Status.IntermediateSerial)
		if err != nil {
			res.Blockers = append(res.Blockers, Blocker{Cluster: c.Name, Reason: fmt.Sprintf("its intermediate %s is unknown: %v", c.Status.IntermediateSerial, err)})
			continue
		}
		if in.RootID != a.ID {
			res.Blockers = append(res.Blockers, Blocker{Cluster: c.Name, Reason: fmt.Sprintf("its intermediate %s still chains to root %s", short(in.Serial), short(in.RootID))})
			continue
		}
		first, err := s.firstUnder(ctx, c.Name, a.ID)
		if err != nil {
			return res, err
		}
		if first.After(lastSwitch) {
			lastSwitch = first
		}
	}
	res.LosingTrust = clusterNames(res.Blockers)
	if wait := lastSwitch.Add(ttl).Sub(s.now()); len(res.Blockers) == 0 && wait > 0 {
		res.Blockers = append(res.Blockers, Blocker{Reason: fmt.Sprintf(
			"workload certificates signed before the last cluster switched (%s) may be valid until %s (--workload-cert-ttl %s): wait %s",
			lastSwitch.UTC().Format(time.RFC3339), lastSwitch.Add(ttl).UTC().Format(time.RFC3339), ttl, wait.Round(time.Second))})
	}
	for _, r := range retiring {
		res.Changes = append(res.Changes, fmt.Sprintf("root %s: retiring -> retired (leaves the trust bundle)", r.ID))
	}
	res.Changes = append(res.Changes, "trust bundle sequence +1; agents drop the old root from root-cert.pem")
	if err := gate("retire", &res, req); err != nil || req.DryRun {
		return res, err
	}
	now := s.now().UTC()
	err = s.store.Update(ctx, func(tx store.Tx) error {
		for _, r := range retiring {
			if err := tx.UpdateRootState(ctx, r.ID, store.RootRetired, now); err != nil {
				return err
			}
		}
		seq, err := tx.IncrementBundleSequence(ctx)
		if err != nil {
			return err
		}
		ids := make([]string, len(retiring))
		for i, r := range retiring {
			ids[i] = r.ID
		}
		return s.audit(ctx, tx, actor, "root.retire", strings.Join(ids, ","), "ok", map[string]any{
			"bundle_sequence": seq, "forced": res.Forced, "blockers": res.Blockers, "workload_cert_ttl": ttl.String(),
		})
	})
	res.Done = err == nil
	return res, err
}

// firstUnder is when cluster got its first intermediate from root.
func (s *Service) firstUnder(ctx context.Context, cluster, rootID string) (time.Time, error) {
	list, err := s.store.ListIntermediates(ctx, cluster)
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
	res := PhaseResult{Phase: "rollback", DryRun: req.DryRun}
	roots, err := s.store.ListRoots(ctx)
	if err != nil {
		return res, err
	}
	prepared := rootsByState(roots, store.RootPrepared)
	if len(prepared) == 0 {
		return res, s.auditRefusal(ctx, actor, "root.rollback", "", refusef("no prepared root to roll back (after activate, rotate forward instead)"))
	}
	p := prepared[0]
	res.Changes = []string{fmt.Sprintf("root %s: prepared -> retired (leaves the trust bundle)", p.ID), "trust bundle sequence +1"}
	if req.DryRun {
		return res, nil
	}
	err = s.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.UpdateRootState(ctx, p.ID, store.RootRetired, s.now().UTC()); err != nil {
			return err
		}
		seq, err := tx.IncrementBundleSequence(ctx)
		if err != nil {
			return err
		}
		return s.audit(ctx, tx, actor, "root.rollback", p.ID, "ok", map[string]any{"bundle_sequence": seq})
	})
	res.Done = err == nil
	return res, err
}

// RevokeRequest is the emergency path for a compromised root.
type RevokeRequest struct {
	RootID string
	// Emergency must be set: revocation breaks trust at once.
	Emergency bool
	KeyType   keys.KeyType
	DryRun    bool
}

// RevokeRoot is the emergency path: the root leaves the bundle at once and
// every intermediate issued under it is revoked. Revoking the active root
// creates a new active root in the same transaction, so issuance goes on;
// every cluster must then re-request, with a service-account or join token
// (its intermediate no longer renews). Until they do, mTLS between
// workloads whose chains differ in root fails: that is the blast radius.
func (s *Service) RevokeRoot(ctx context.Context, req RevokeRequest) (PhaseResult, error) {
	actor := ActorFrom(ctx)
	res, err := s.revoke(ctx, actor, req)
	if err != nil {
		return res, s.auditRefusal(ctx, actor, "root.revoke", req.RootID, err)
	}
	return res, nil
}

func (s *Service) revoke(ctx context.Context, actor Actor, req RevokeRequest) (PhaseResult, error) {
	res := PhaseResult{Phase: "revoke", DryRun: req.DryRun}
	if !req.Emergency {
		return res, refusef("revoking a root breaks trust at once: pass --emergency to confirm (for a planned change use prepare, activate, retire)")
	}
	r, err := s.store.GetRoot(ctx, req.RootID)
	if errors.Is(err, store.ErrNotFound) {
		return res, refusef("no root %s: see `meshroot root list`", req.RootID)
	}
	if err != nil {
		return res, err
	}
	if !r.State.InBundle() {
		return res, refusef("root %s is already %s", r.ID, r.State)
	}
	inters, err := s.store.ListIntermediates(ctx, "")
	if err != nil {
		return res, err
	}
	var affected []string
	seen := map[string]bool{}
	var serials []string
	for _, in := range inters {
		if in.RootID == r.ID && in.Status != store.IntermediateRevoked {
			serials = append(serials, in.Serial)
			if in.Status == store.IntermediateActive && !seen[in.Cluster] {
				seen[in.Cluster] = true
				affected = append(affected, in.Cluster)
			}
		}
	}
	sort.Strings(affected)
	res.LosingTrust = affected
	res.Changes = []string{
		fmt.Sprintf("root %s: %s -> revoked (leaves the trust bundle now)", r.ID, r.State),
		fmt.Sprintf("%d intermediate(s) issued under it revoked; clusters that must re-issue: %v", len(serials), affected),
		"trust bundle sequence +1",
	}
	var newRoot *store.Root
	if r.State == store.RootActive {
		res.Changes = append(res.Changes, "a new root is created and made active at once")
	}
	if req.DryRun {
		return res, nil
	}
	if r.State == store.RootActive {
		kt := req.KeyType
		if kt == "" {
			kt = keys.DefaultKeyType
		}
		nr, _, err := s.newRootKey(ctx, kt, r.TrustDomain, 0, store.RootActive)
		if err != nil {
			return res, fmt.Errorf("replacement root: %w", err)
		}
		newRoot = &nr
	}
	now := s.now().UTC()
	err = s.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.UpdateRootState(ctx, r.ID, store.RootRevoked, now); err != nil {
			return err
		}
		for _, serial := range serials {
			if err := tx.UpdateIntermediateStatus(ctx, serial, store.IntermediateRevoked); err != nil {
				return err
			}
		}
		seq, err := tx.IncrementBundleSequence(ctx)
		if err != nil {
			return err
		}
		details := map[string]any{"bundle_sequence": seq, "revoked_intermediates": len(serials), "clusters": affected}
		if newRoot != nil {
			newRoot.AddedSequence, newRoot.StateChangedAt = seq, now
			if err := tx.CreateRoot(ctx, *newRoot); err != nil {
				return err
			}
			details["replacement_root"] = newRoot.ID
		}
		return s.audit(ctx, tx, actor, "root.revoke", r.ID, "ok", details)
	})
	res.Done = err == nil
	return res, err
}

// ClusterRotationStatus is one cluster's part in a rotation.
type ClusterRotationStatus struct {
	Cluster              string    `json:"cluster"`
	BundleSequence       uint64    `json:"bundle_sequence_applied"`
	IntermediateSerial   string    `json:"intermediate_serial,omitempty"`
	IntermediateRoot     string    `json:"intermediate_root,omitempty"`
	IntermediateNotAfter time.Time `json:"intermediate_not_after"`
	LastContact          time.Time `json:"last_contact"`
	Blockers             []string  `json:"blockers,omitempty"`
}

// RotationStatus is the state of every root and every cluster, with what
// blocks the next phase.
type RotationStatus struct {
	Roots          []store.Root            `json:"-"`
	BundleSequence uint64                  `json:"bundle_sequence"`
	NextPhase      string                  `json:"next_phase"`
	Clusters       []ClusterRotationStatus `json:"clusters"`
	Blockers       []Blocker               `json:"blockers,omitempty"`
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
			LastContact: c.Status.LastContact, Blockers: byCluster[c.Name],
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
	cur, err := s.store.BundleSequence(ctx)
	if err != nil {
		return err
	}
	if bundleSequence > cur {
		return refusef("reported bundle sequence %d is ahead of the server's %d", bundleSequence, cur)
	}
	if serial != "" {
		in, err := s.store.GetIntermediate(ctx, serial)
		if err != nil || in.Cluster != cluster {
			return refusef("intermediate %s is not one issued to cluster %s", serial, cluster)
		}
	}
	return s.RecordContact(ctx, cluster, store.ClusterStatus{BundleSequence: bundleSequence, IntermediateSerial: serial})
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
