package ca

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshroot/meshroot/store"
)

// Bounds on what an agent may report about istiod.
const (
	maxIstiodDetail = 1024
	maxIstiodRoots  = 16
	maxSerialLen    = 64
)

// StatusReport is what a cluster's agent says it applied: the trust bundle
// sequence, the intermediate it runs with, what it confirmed istiod
// serves, and the root CRL numbers in its ca-crl.pem.
type StatusReport struct {
	Cluster string
	// Registered, when set, is the registration of Cluster the caller
	// authenticated the agent against (the server's authentication reads
	// it). The report is recorded only while that registration is the
	// cluster's current one: an agent of a registration removed (and its
	// name registered again) meanwhile does not speak for the new one.
	// Without it (zero), the registration read at the report's start is
	// the one.
	Registered store.Registration
	// BundleSequence is the trust bundle applied: at most the server's.
	BundleSequence uint64
	// IntermediateSerial is the intermediate the cluster runs with; it
	// must have been issued to this registration. "" keeps the last one.
	IntermediateSerial string
	// Istiod is what the agent confirmed istiod serves; State "" records
	// nothing about istiod (an agent that does not confirm).
	Istiod store.IstiodStatus
	// AppliedCRLs are the root CRL numbers in the cluster's ca-crl.pem
	// (nil: not reported, empty: no ca-crl.pem), for the quarantine
	// enforcement status.
	AppliedCRLs map[string]uint64
	// Intermediate, when set, is the record of IntermediateSerial as the
	// caller read it (authentication by that intermediate reads it): its
	// cluster and issue time never change, so Report checks them without
	// another read. A record of another serial is ignored.
	Intermediate *store.Intermediate
}

// Report records what a cluster's agent applied (see StatusReport) and
// that it was heard from now. The report is checked against the cluster's
// registration and the server's bundle sequence; the registration is
// checked again inside the transaction that records it.
func (s *Service) Report(ctx context.Context, r StatusReport) error {
	if err := checkAppliedCRLs(r.AppliedCRLs); err != nil {
		return err
	}
	ist := r.Istiod
	switch ist.State {
	case "", store.IstiodLoaded, store.IstiodPending, store.IstiodStale, store.IstiodUnconfirmed:
	default:
		return refusef("unknown istiod state %q: want loaded, pending, stale or unconfirmed", ist.State)
	}
	if len(ist.Detail) > maxIstiodDetail || len(ist.Roots) > maxIstiodRoots || len(ist.Serial) > maxSerialLen {
		return refusef("istiod report too large: detail at most %d bytes, at most %d roots", maxIstiodDetail, maxIstiodRoots)
	}
	for _, root := range ist.Roots {
		if len(root) > 128 {
			return refusef("istiod report: root ID longer than 128 bytes")
		}
	}
	if ist.BundleSequence > r.BundleSequence || (ist.State == store.IstiodLoaded && ist.BundleSequence != r.BundleSequence) {
		return refusef("istiod bundle sequence %d does not match the applied %d", ist.BundleSequence, r.BundleSequence)
	}
	reg := r.Registered
	if reg == (store.Registration{}) {
		c, err := s.cluster(ctx, r.Cluster)
		if err != nil {
			return err
		}
		reg = c.Registration()
	} else if reg.Name != r.Cluster {
		return fmt.Errorf("internal error: the report of cluster %q was handed the registration of cluster %q", r.Cluster, reg.Name)
	}
	// The bundle sequence only grows and an intermediate's cluster and
	// issue time never change: these two checks hold once they pass.
	if r.BundleSequence > s.seqSeen.Load() {
		cur, err := s.store.BundleSequence(ctx)
		if err != nil {
			return err
		}
		s.sawSequence(cur)
		if r.BundleSequence > cur {
			return refusef("reported bundle sequence %d is ahead of the server's %d", r.BundleSequence, cur)
		}
	}
	if r.IntermediateSerial != "" {
		in := r.Intermediate
		if in == nil || in.Serial != r.IntermediateSerial {
			rec, err := s.store.GetIntermediate(ctx, r.IntermediateSerial)
			if err != nil {
				return refusef("intermediate %s is not one issued to cluster %s", r.IntermediateSerial, r.Cluster)
			}
			in = &rec
		}
		if in.Cluster != r.Cluster {
			return refusef("intermediate %s is not one issued to cluster %s", r.IntermediateSerial, r.Cluster)
		}
		if in.CreatedAt.Before(reg.CreatedAt) {
			return refusef("intermediate %s was issued to an earlier registration of cluster %s (removed; registered again at %s)",
				r.IntermediateSerial, r.Cluster, reg.CreatedAt.UTC().Format(time.RFC3339))
		}
	}
	return s.recordContact(ctx, reg, store.ClusterStatus{BundleSequence: r.BundleSequence, IntermediateSerial: r.IntermediateSerial, Istiod: ist, AppliedCRLs: r.AppliedCRLs})
}

// sawSequence raises seqSeen to seq, a bundle sequence read from the
// store.
func (s *Service) sawSequence(seq uint64) {
	for {
		seen := s.seqSeen.Load()
		if seq <= seen || s.seqSeen.CompareAndSwap(seen, seq) {
			return
		}
	}
}

// SetClusterGate marks what makes cluster ready for a rotation phase:
// store.GateSecret (the Secret applied is enough: for clusters whose agent
// cannot confirm istiod), store.GateIstiod (istiod must confirm), or ""
// (the default). It is audited as cluster.gate.
func (s *Service) SetClusterGate(ctx context.Context, name, gate string) error {
	actor := ActorFrom(ctx)
	err := s.store.Update(ctx, func(tx store.Tx) error {
		switch gate {
		case "", store.GateSecret, store.GateIstiod:
		default:
			return refusef("unknown gate %q: use secret or istiod", gate)
		}
		c, err := tx.GetCluster(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			return refusef("cluster %s is not registered", name)
		} else if err != nil {
			return err
		}
		prev := c.Status.Gate
		c.Status.Gate = gate
		if err := tx.UpdateClusterStatus(ctx, name, c.Status); err != nil {
			return err
		}
		return s.audit(ctx, tx, actor, "cluster.gate", name, "ok", map[string]any{"gate": gateName(gate), "previous": gateName(prev)})
	})
	if err != nil {
		return s.auditRefusal(ctx, actor, "cluster.gate", name, err)
	}
	return nil
}

func gateName(g string) string {
	if g == "" {
		return "default"
	}
	return g
}

// EffectiveGate is the gate that applies to c: the operator's, else
// istiod when its agent has ever reported istiod confirmation, else
// secret (agents from before the confirmation keep working as they did).
func EffectiveGate(c store.Cluster) string {
	switch {
	case c.Status.Gate != "":
		return c.Status.Gate
	case c.Status.Istiod.State != "":
		return store.GateIstiod
	}
	return store.GateSecret
}

// istiodBlocker says why istiod in cluster c has not confirmed the trust
// bundle needSeq (and, when needSerial is set, the intermediate the
// cluster reported), or "" when it has or the cluster's gate is secret.
func istiodBlocker(c store.Cluster, needSeq uint64, needSerial string) string {
	if EffectiveGate(c) != store.GateIstiod {
		return ""
	}
	ist := c.Status.Istiod
	if ist.State == store.IstiodLoaded && ist.BundleSequence >= needSeq && (needSerial == "" || ist.Serial == needSerial) {
		return ""
	}
	what := fmt.Sprintf("trust bundle %d", needSeq)
	if needSerial != "" {
		what += " and intermediate " + short(needSerial)
	}
	switch ist.State {
	case "", store.IstiodUnconfirmed:
		return fmt.Sprintf("unconfirmed: its agent cannot tell whether istiod serves %s (%s); if this cluster runs no istiod the agent can see, mark it with `meshroot cluster gate %s secret`", what, orNone(ist.Detail), c.Name)
	case store.IstiodStale:
		return fmt.Sprintf("istiod stale since %s: it does not serve %s (%s)", ist.StaleSince.UTC().Format(time.RFC3339), what, orNone(ist.Detail))
	}
	return fmt.Sprintf("istiod has not confirmed %s yet: %s since %s (%s)", what, ist.State, ist.Since.UTC().Format(time.RFC3339), orNone(ist.Detail))
}

func orNone(s string) string {
	if s == "" {
		return "no detail"
	}
	return s
}
