package fleetpage

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// Alert thresholds, the same as the shipped alerting rules: an
// intermediate warns 30 days before its NotAfter and is critical 7 days
// before; a root warns 180 days before; a cluster is "not seen" after an
// hour without contact.
const (
	IntermediateWarn = 30 * 24 * time.Hour
	IntermediateCrit = 7 * 24 * time.Hour
	RootWarn         = 180 * 24 * time.Hour
	NotSeenAfter     = time.Hour
	// RenewFraction is where in its lifetime an intermediate is renewed
	// (the agent's default) and a root's rotation is planned.
	RenewFraction = 2.0 / 3
)

// Cluster states, worst first. A cluster row carries the worst that applies.
const (
	StateExpired        = "expired"
	StateExpiringCrit   = "expiring (< 7 days)"
	StateExpiringWarn   = "expiring (< 30 days)"
	StateNotSeen        = "not seen"
	StateNoIntermediate = "no intermediate"
	StateHealthy        = "healthy"
)

// Fleet is everything the page shows, as served at /fleet.json.
type Fleet struct {
	GeneratedAt    time.Time    `json:"generated_at"`
	TrustDomain    string       `json:"trust_domain"`
	BundleSequence uint64       `json:"bundle_sequence"`
	Clusters       []Cluster    `json:"clusters"`
	Roots          []Root       `json:"roots"`
	Rotation       Rotation     `json:"rotation"`
	Federation     []Peer       `json:"federation"`
	Audit          Audit        `json:"audit"`
	Calendar       Calendar     `json:"calendar"`
	Thresholds     ThresholdSet `json:"thresholds"`
}

// ThresholdSet is the alert thresholds in days, as drawn on the calendar.
type ThresholdSet struct {
	IntermediateWarnDays int     `json:"intermediate_warn_days"`
	IntermediateCritDays int     `json:"intermediate_crit_days"`
	RootWarnDays         int     `json:"root_warn_days"`
	NotSeenSeconds       int     `json:"not_seen_seconds"`
	RenewFraction        float64 `json:"renew_fraction"`
}

// Cluster is one registered cluster's row.
type Cluster struct {
	Name string `json:"name"`
	// State is the worst of States; Level is ok, warn or crit.
	State  string   `json:"state"`
	States []string `json:"states"`
	Level  string   `json:"level"`
	RootID string   `json:"root_id,omitempty"`
	// IntermediateSerial is the intermediate the agent reported running,
	// or, when it reported none, the newest one issued (Source says which).
	IntermediateSerial    string    `json:"intermediate_serial,omitempty"`
	IntermediateSource    string    `json:"intermediate_source,omitempty"`
	IntermediateNotBefore time.Time `json:"intermediate_not_before,omitzero"`
	IntermediateNotAfter  time.Time `json:"intermediate_not_after,omitzero"`
	DaysLeft              *int      `json:"days_left,omitempty"`
	RenewAt               time.Time `json:"renew_at,omitzero"`
	LastContact           time.Time `json:"last_contact,omitzero"`
	SinceContact          string    `json:"since_contact"`
	BundleApplied         uint64    `json:"bundle_sequence_applied"`
	BundleCurrent         bool      `json:"bundle_current"`
	// Istiod is the istiod-confirmed state: "unknown" until agents report it.
	Istiod string `json:"istiod"`
	// Quarantined is true while the cluster is quarantined;
	// Enforcement then says which other clusters applied the CRLs that
	// list it and which are pending.
	Quarantined bool     `json:"quarantined"`
	Enforcement string   `json:"enforcement,omitempty"`
	Blockers    []string `json:"blockers,omitempty"`
}

// Root is one root of trust.
type Root struct {
	ID            string    `json:"id"`
	State         string    `json:"state"`
	NotBefore     time.Time `json:"not_before"`
	NotAfter      time.Time `json:"not_after"`
	DaysLeft      int       `json:"days_left"`
	RotateBy      time.Time `json:"planned_rotation"`
	AddedSequence uint64    `json:"added_sequence"`
	Level         string    `json:"level"`
}

// Rotation is where a root rotation stands.
type Rotation struct {
	// InProgress is true between `root prepare` and `root retire`.
	InProgress bool `json:"in_progress"`
	// Phase describes the state ("no rotation in progress", "new root
	// prepared", "new root active, old root retiring").
	Phase string `json:"phase"`
	// NextPhase is the next command: prepare, activate or retire.
	NextPhase string       `json:"next_phase"`
	Blockers  []ca.Blocker `json:"blockers,omitempty"`
}

// Peer is one federation peer.
type Peer struct {
	TrustDomain string    `json:"trust_domain"`
	URL         string    `json:"url"`
	Profile     string    `json:"profile"`
	Sequence    uint64    `json:"sequence"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	Health      string    `json:"health"`
	Level       string    `json:"level"`
}

// Audit is the audit log's tail and whether its hash chain verifies.
type Audit struct {
	Verified bool               `json:"verified"`
	Entries  int                `json:"entries"`
	Error    string             `json:"error,omitempty"`
	Tail     []store.AuditEntry `json:"tail"`
}

// levels of attention, as CSS classes.
const (
	levelOK   = "ok"
	levelWarn = "warn"
	levelCrit = "crit"
)

// build reads the fleet through r.
func build(ctx context.Context, r Reader, now time.Time, opts Options) (*Fleet, error) {
	f := &Fleet{GeneratedAt: now.UTC(), Thresholds: ThresholdSet{
		IntermediateWarnDays: days(IntermediateWarn), IntermediateCritDays: days(IntermediateCrit),
		RootWarnDays: days(RootWarn), NotSeenSeconds: int(NotSeenAfter / time.Second), RenewFraction: RenewFraction,
	}}
	st, err := r.RotationStatus(ctx, opts.WorkloadCertTTL)
	if err != nil {
		return nil, fmt.Errorf("rotation status: %w", err)
	}
	f.BundleSequence = st.BundleSequence
	f.Rotation = rotation(st)
	for _, rt := range st.Roots {
		if !rt.State.InBundle() {
			continue // retired and revoked roots no longer matter to expiry
		}
		if rt.State == store.RootActive {
			f.TrustDomain = rt.TrustDomain
		}
		f.Roots = append(f.Roots, rootRow(rt, now))
	}
	if err := f.addClusters(ctx, r, st, now); err != nil {
		return nil, err
	}
	peers, err := r.ListFederation(ctx)
	if err != nil {
		return nil, fmt.Errorf("federation peers: %w", err)
	}
	for _, p := range peers {
		f.Federation = append(f.Federation, peerRow(p, now))
	}
	if f.Audit, err = auditTail(ctx, r, opts.AuditTail); err != nil {
		return nil, err
	}
	f.Calendar = calendar(f, now)
	return f, nil
}

func rotation(st ca.RotationStatus) Rotation {
	rot := Rotation{NextPhase: st.NextPhase, Blockers: st.Blockers}
	switch st.NextPhase {
	case "activate":
		rot.InProgress, rot.Phase = true, "new root prepared (in the trust bundle, not signing yet)"
	case "retire":
		rot.InProgress, rot.Phase = true, "new root active, old root retiring (still trusted)"
	default:
		rot.Phase = "no rotation in progress"
	}
	var perCluster []ca.Blocker
	for _, c := range st.Clusters {
		for _, b := range c.Blockers {
			perCluster = append(perCluster, ca.Blocker{Cluster: c.Cluster, Reason: b})
		}
	}
	rot.Blockers = append(perCluster, rot.Blockers...)
	return rot
}

func rootRow(rt store.Root, now time.Time) Root {
	row := Root{ID: rt.ID, State: string(rt.State), NotAfter: rt.NotAfter, AddedSequence: rt.AddedSequence, NotBefore: rt.CreatedAt}
	if certs, err := ca.ParseCerts(rt.ChainPEM); err == nil && len(certs) > 0 {
		row.NotBefore = certs[0].NotBefore
	}
	row.DaysLeft = daysLeft(rt.NotAfter, now)
	row.RotateBy = renewAt(row.NotBefore, rt.NotAfter)
	row.Level = levelOK
	switch left := rt.NotAfter.Sub(now); {
	case left <= 0:
		row.Level = levelCrit
	case left < RootWarn:
		row.Level = levelWarn
	}
	return row
}

// addClusters adds a row per cluster: what its agent reported, or else
// the newest intermediate issued to it.
func (f *Fleet) addClusters(ctx context.Context, r Reader, st ca.RotationStatus, now time.Time) error {
	reported := map[string]ca.ClusterRotationStatus{}
	for _, c := range st.Clusters {
		reported[c.Cluster] = c
	}
	quarantined := map[string]ca.QuarantineStatus{}
	for _, q := range st.Quarantines {
		quarantined[q.Cluster] = q
	}
	clusters, err := r.ListClusters(ctx)
	if err != nil {
		return fmt.Errorf("clusters: %w", err)
	}
	for _, c := range clusters {
		row := Cluster{
			Name: c.Name, LastContact: c.Status.LastContact, BundleApplied: c.Status.BundleSequence,
			BundleCurrent: c.Status.BundleSequence == st.BundleSequence, Istiod: "unknown",
		}
		if q, ok := quarantined[c.Name]; ok {
			row.Quarantined, row.Enforcement = true, enforcement(q)
		}
		rs := reported[c.Name]
		row.Blockers = rs.Blockers
		if rs.IntermediateSerial != "" && !rs.IntermediateNotAfter.IsZero() {
			row.IntermediateSerial, row.IntermediateSource = rs.IntermediateSerial, "reported"
			row.RootID, row.IntermediateNotAfter = rs.IntermediateRoot, rs.IntermediateNotAfter
		}
		// The issued intermediate: its NotBefore for the renewal time, and
		// the intermediate itself when the agent reported none.
		d, err := r.ShowCluster(ctx, c.Name)
		var refused *ca.PolicyError
		if errors.Is(err, store.ErrNotFound) || errors.As(err, &refused) {
			continue // removed since the list was read
		}
		if err != nil {
			return fmt.Errorf("cluster %s: %w", c.Name, err)
		}
		if cur := d.Current; cur != nil {
			if row.IntermediateSerial == "" {
				row.IntermediateSerial, row.IntermediateSource = cur.Serial, "issued, not reported yet"
				row.RootID, row.IntermediateNotAfter = cur.RootID, cur.NotAfter
			}
			if cur.Serial == row.IntermediateSerial {
				row.IntermediateNotBefore = cur.NotBefore
			}
		}
		if !row.IntermediateNotAfter.IsZero() {
			dl := daysLeft(row.IntermediateNotAfter, now)
			row.DaysLeft = &dl
			if !row.IntermediateNotBefore.IsZero() {
				row.RenewAt = renewAt(row.IntermediateNotBefore, row.IntermediateNotAfter)
			}
		}
		row.SinceContact = since(c.Status.LastContact, now)
		row.States, row.Level = clusterStates(row, now)
		row.State = row.States[0]
		f.Clusters = append(f.Clusters, row)
	}
	return nil
}

// clusterStates lists what is wrong with a cluster, worst first
// ("healthy" when nothing is), and the level of the worst.
func clusterStates(c Cluster, now time.Time) ([]string, string) {
	var states []string
	level := levelOK
	raise := func(s, l string) {
		states = append(states, s)
		if l == levelCrit || level == levelOK {
			level = l
		}
	}
	if !c.IntermediateNotAfter.IsZero() {
		switch left := c.IntermediateNotAfter.Sub(now); {
		case left <= 0:
			raise(StateExpired, levelCrit)
		case left < IntermediateCrit:
			raise(StateExpiringCrit, levelCrit)
		case left < IntermediateWarn:
			raise(StateExpiringWarn, levelWarn)
		}
	}
	if c.LastContact.IsZero() || now.Sub(c.LastContact) > NotSeenAfter {
		raise(StateNotSeen, levelWarn)
	}
	if c.IntermediateNotAfter.IsZero() {
		raise(StateNoIntermediate, levelWarn)
	}
	if len(states) == 0 {
		return []string{StateHealthy}, levelOK
	}
	return states, level
}

func peerRow(p store.FederationPeer, now time.Time) Peer {
	row := Peer{
		TrustDomain: p.TrustDomain, URL: p.URL, Profile: string(p.Profile), Sequence: p.Sequence,
		LastSuccess: p.Status.LastSuccess, LastAttempt: p.Status.LastAttempt, NextAttempt: p.Status.NextAttempt,
		LastError: p.Status.LastError,
	}
	switch {
	case p.Status.LastError != "" && len(p.Bundle) > 0:
		row.Health, row.Level = "failing: holding the last good bundle", levelWarn
	case p.Status.LastError != "":
		row.Health, row.Level = "failing: no bundle yet", levelCrit
	case p.Status.LastSuccess.IsZero() && len(p.Bundle) > 0:
		row.Health, row.Level = "bootstrap bundle, not fetched yet", levelWarn
	case p.Status.LastSuccess.IsZero():
		row.Health, row.Level = "not fetched yet", levelWarn
	default:
		row.Health, row.Level = "ok, refreshed "+since(p.Status.LastSuccess, now), levelOK
	}
	return row
}

// auditTail verifies the audit chain and reads its last n entries (paging
// forward, so that it holds at most n entries whatever the log's length).
func auditTail(ctx context.Context, r Reader, n int) (Audit, error) {
	var a Audit
	count, err := r.VerifyAudit(ctx)
	a.Entries = count
	if err != nil {
		var ce *store.ChainError
		if !errors.As(err, &ce) {
			return a, fmt.Errorf("audit verify: %w", err)
		}
		a.Error = ce.Error()
	} else {
		a.Verified = true
	}
	after := max(int64(count-n), 0) // sequence numbers start at 1
	for {
		page, err := r.ListAudit(ctx, after, n)
		if err != nil {
			return a, fmt.Errorf("audit list: %w", err)
		}
		a.Tail = append(a.Tail, page...)
		if len(a.Tail) > n {
			a.Tail = a.Tail[len(a.Tail)-n:]
		}
		if len(page) < n {
			break
		}
		after = page[len(page)-1].Seq
	}
	for i, j := 0, len(a.Tail)-1; i < j; i, j = i+1, j-1 { // newest first
		a.Tail[i], a.Tail[j] = a.Tail[j], a.Tail[i]
	}
	if a.Tail == nil {
		a.Tail = []store.AuditEntry{}
	}
	return a, nil
}

func renewAt(notBefore, notAfter time.Time) time.Time {
	return notBefore.Add(time.Duration(float64(notAfter.Sub(notBefore)) * RenewFraction))
}

func days(d time.Duration) int { return int(d / (24 * time.Hour)) }

// daysLeft is the whole days until t (negative once past).
func daysLeft(t, now time.Time) int {
	return int(math.Floor(t.Sub(now).Hours() / 24))
}

// since says how long ago t was, coarsely ("never" for zero).
func since(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", days(d))
}

// enforcement says in a few words who enforces quarantine q: "applied by
// 2 of 3; pending: south".
func enforcement(q ca.QuarantineStatus) string {
	pending := q.Pending()
	s := fmt.Sprintf("applied by %d of %d", len(q.Enforcement)-len(pending), len(q.Enforcement))
	for i, p := range pending {
		if i == 0 {
			s += "; pending: " + p.Cluster
		} else {
			s += ", " + p.Cluster
		}
	}
	return s
}
