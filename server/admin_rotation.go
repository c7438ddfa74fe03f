package server

import (
	"context"
	"time"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
)

// PhaseResultToProto converts a rotation phase result.
func PhaseResultToProto(r ca.PhaseResult) *meshrootv1.PhaseResult {
	m := &meshrootv1.PhaseResult{Phase: r.Phase, Changes: r.Changes, LosingTrust: r.LosingTrust, DryRun: r.DryRun, Forced: r.Forced, Done: r.Done}
	for _, b := range r.Blockers {
		m.Blockers = append(m.Blockers, &meshrootv1.Blocker{Cluster: b.Cluster, Reason: b.Reason})
	}
	return m
}

// PhaseResultFromProto converts a rotation phase result message.
func PhaseResultFromProto(m *meshrootv1.PhaseResult) ca.PhaseResult {
	r := ca.PhaseResult{Phase: m.GetPhase(), Changes: m.GetChanges(), LosingTrust: m.GetLosingTrust(), DryRun: m.GetDryRun(), Forced: m.GetForced(), Done: m.GetDone()}
	for _, b := range m.GetBlockers() {
		r.Blockers = append(r.Blockers, ca.Blocker{Cluster: b.GetCluster(), Reason: b.GetReason()})
	}
	return r
}

func phaseRequest(m *meshrootv1.PhaseRequest) ca.PhaseRequest {
	return ca.PhaseRequest{DryRun: m.GetDryRun(), Force: m.GetForce(), WorkloadCertTTL: time.Duration(m.GetWorkloadCertTtlSeconds()) * time.Second}
}

// ActivateRoot runs rotation phase 2.
func (s *AdminServer) ActivateRoot(ctx context.Context, req *meshrootv1.PhaseRequest) (*meshrootv1.PhaseResult, error) {
	r, err := s.svc.ActivateRoot(ca.WithActor(ctx, s.actor(ctx)), phaseRequest(req))
	return s.phaseDone(ctx, r, err)
}

// RetireRoot runs rotation phase 3.
func (s *AdminServer) RetireRoot(ctx context.Context, req *meshrootv1.PhaseRequest) (*meshrootv1.PhaseResult, error) {
	r, err := s.svc.RetireRoot(ca.WithActor(ctx, s.actor(ctx)), phaseRequest(req))
	return s.phaseDone(ctx, r, err)
}

// RollbackRoot undoes a prepare.
func (s *AdminServer) RollbackRoot(ctx context.Context, req *meshrootv1.PhaseRequest) (*meshrootv1.PhaseResult, error) {
	r, err := s.svc.RollbackPrepared(ca.WithActor(ctx, s.actor(ctx)), phaseRequest(req))
	return s.phaseDone(ctx, r, err)
}

// RevokeRoot is the emergency path.
func (s *AdminServer) RevokeRoot(ctx context.Context, req *meshrootv1.RevokeRootRequest) (*meshrootv1.PhaseResult, error) {
	r, err := s.svc.RevokeRoot(ca.WithActor(ctx, s.actor(ctx)), ca.RevokeRequest{
		RootID: req.GetRootId(), Emergency: req.GetEmergency(), KeyType: keys.KeyType(req.GetKeyType()), DryRun: req.GetDryRun(),
	})

	return s.phaseDone(ctx, r, err)
}

func (s *AdminServer) phaseDone(ctx context.Context, r ca.PhaseResult, err error) (*meshrootv1.PhaseResult, error) {
	if err != nil {
		return nil, s.err(ctx, err)
	}
	if r.Done {
		s.hub.Poke() // agents hear of the new active root or bundle at once
	}
	return PhaseResultToProto(r), nil
}

// RotationStatus reports every cluster's part in the rotation.
func (s *AdminServer) RotationStatus(ctx context.Context, req *meshrootv1.RotationStatusRequest) (*meshrootv1.RotationStatusResponse, error) {
	st, err := s.svc.RotationStatus(ctx, time.Duration(req.GetWorkloadCertTtlSeconds())*time.Second)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	out := &meshrootv1.RotationStatusResponse{BundleSequence: st.BundleSequence, NextPhase: st.NextPhase}
	for _, r := range st.Roots {
		m, err := RootToProto(r)
		if err != nil {
			return nil, s.err(ctx, err)
		}
		out.Roots = append(out.Roots, m)
	}
	for _, c := range st.Clusters {
		out.Clusters = append(out.Clusters, &meshrootv1.ClusterRotationStatus{
			Cluster: c.Cluster, BundleSequenceApplied: c.BundleSequence, IntermediateSerial: c.IntermediateSerial,
			IntermediateRoot: c.IntermediateRoot, IntermediateNotAfter: ts(c.IntermediateNotAfter), LastContact: ts(c.LastContact),
			Blockers: c.Blockers,
		})
	}
	for _, b := range st.Blockers {
		out.Blockers = append(out.Blockers, &meshrootv1.Blocker{Cluster: b.Cluster, Reason: b.Reason})
	}
	return out, nil
}

// RotationStatusFromProto converts a rotation status message.
func RotationStatusFromProto(m *meshrootv1.RotationStatusResponse) (ca.RotationStatus, error) {
	st := ca.RotationStatus{BundleSequence: m.GetBundleSequence(), NextPhase: m.GetNextPhase()}
	for _, r := range m.GetRoots() {
		root, err := RootFromProto(r)
		if err != nil {
			return st, err
		}
		st.Roots = append(st.Roots, root)
	}
	for _, c := range m.GetClusters() {
		st.Clusters = append(st.Clusters, ca.ClusterRotationStatus{
			Cluster: c.GetCluster(), BundleSequence: c.GetBundleSequenceApplied(), IntermediateSerial: c.GetIntermediateSerial(),
			IntermediateRoot: c.GetIntermediateRoot(), IntermediateNotAfter: fromTS(c.GetIntermediateNotAfter()),
			LastContact: fromTS(c.GetLastContact()), Blockers: c.GetBlockers(),
		})
	}
	for _, b := range m.GetBlockers() {
		st.Blockers = append(st.Blockers, ca.Blocker{Cluster: b.GetCluster(), Reason: b.GetReason()})
	}
	return st, nil
}
