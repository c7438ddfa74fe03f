package wire

import (
	"time"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/store"
)

// PhaseRequestToProto converts a rotation phase request.
func PhaseRequestToProto(r ca.PhaseRequest) *meshrootv1.PhaseRequest {
	return &meshrootv1.PhaseRequest{DryRun: r.DryRun, Force: r.Force, WorkloadCertTtlSeconds: Seconds(r.WorkloadCertTTL)}
}

// PhaseRequestFromProto converts a rotation phase request message.
func PhaseRequestFromProto(m *meshrootv1.PhaseRequest) ca.PhaseRequest {
	return ca.PhaseRequest{DryRun: m.GetDryRun(), Force: m.GetForce(), WorkloadCertTTL: FromSeconds(m.GetWorkloadCertTtlSeconds())}
}

// RevokeRequestToProto converts an emergency root revocation.
func RevokeRequestToProto(r ca.RevokeRequest) *meshrootv1.RevokeRootRequest {
	return &meshrootv1.RevokeRootRequest{RootId: r.RootID, Emergency: r.Emergency, KeyType: string(r.KeyType), DryRun: r.DryRun}
}

// RevokeRequestFromProto converts an emergency root revocation message.
func RevokeRequestFromProto(m *meshrootv1.RevokeRootRequest) ca.RevokeRequest {
	return ca.RevokeRequest{RootID: m.GetRootId(), Emergency: m.GetEmergency(), KeyType: keys.KeyType(m.GetKeyType()), DryRun: m.GetDryRun()}
}

func blockersToProto(bs []ca.Blocker) []*meshrootv1.Blocker {
	var out []*meshrootv1.Blocker
	for _, b := range bs {
		out = append(out, &meshrootv1.Blocker{Cluster: b.Cluster, Reason: b.Reason})
	}
	return out
}

func blockersFromProto(ms []*meshrootv1.Blocker) []ca.Blocker {
	var out []ca.Blocker
	for _, b := range ms {
		out = append(out, ca.Blocker{Cluster: b.GetCluster(), Reason: b.GetReason()})
	}
	return out
}

// PhaseResultToProto converts a rotation phase result.
func PhaseResultToProto(r ca.PhaseResult) *meshrootv1.PhaseResult {
	return &meshrootv1.PhaseResult{
		Phase: r.Phase, Changes: r.Changes, LosingTrust: r.LosingTrust, DryRun: r.DryRun, Forced: r.Forced, Done: r.Done,
		Blockers: blockersToProto(r.Blockers),
	}
}

// PhaseResultFromProto converts a rotation phase result message.
func PhaseResultFromProto(m *meshrootv1.PhaseResult) ca.PhaseResult {
	return ca.PhaseResult{
		Phase: m.GetPhase(), Changes: m.GetChanges(), LosingTrust: m.GetLosingTrust(), DryRun: m.GetDryRun(), Forced: m.GetForced(), Done: m.GetDone(),
		Blockers: blockersFromProto(m.GetBlockers()),
	}
}

// RotationStatusToProto converts the rotation status.
func RotationStatusToProto(st ca.RotationStatus) (*meshrootv1.RotationStatusResponse, error) {
	roots, err := RootsToProto(st.Roots)
	if err != nil {
		return nil, err
	}
	out := &meshrootv1.RotationStatusResponse{BundleSequence: st.BundleSequence, NextPhase: st.NextPhase, Roots: roots, Blockers: blockersToProto(st.Blockers),
		Quarantines: quarantinesToProto(st.Quarantines)}
	for _, r := range st.Replicas {
		out.Replicas = append(out.Replicas, &meshrootv1.ReplicaStatus{Id: r.ID, Leader: r.Leader, StartedAt: TS(r.StartedAt), HeartbeatAgeMillis: r.HeartbeatAge.Milliseconds()})
	}
	for _, c := range st.Clusters {
		ist := c.Istiod
		out.Clusters = append(out.Clusters, &meshrootv1.ClusterRotationStatus{
			Cluster: c.Cluster, BundleSequenceApplied: c.BundleSequence, IntermediateSerial: c.IntermediateSerial,
			IntermediateRoot: c.IntermediateRoot, IntermediateNotAfter: TS(c.IntermediateNotAfter), LastContact: TS(c.LastContact),
			Blockers: c.Blockers, Gate: c.Gate,
			IstiodState: ist.State, IstiodBundleSequence: ist.BundleSequence, IstiodSerial: ist.Serial, IstiodProbed: ist.Probed,
			IstiodRoots: ist.Roots, IstiodSince: TS(ist.Since), IstiodStaleSince: TS(ist.StaleSince), IstiodDetail: ist.Detail,
		})
	}
	return out, nil
}

// RotationStatusFromProto converts a rotation status message.
func RotationStatusFromProto(m *meshrootv1.RotationStatusResponse) (ca.RotationStatus, error) {
	roots, err := RootsFromProto(m.GetRoots())
	if err != nil {
		return ca.RotationStatus{}, err
	}
	st := ca.RotationStatus{BundleSequence: m.GetBundleSequence(), NextPhase: m.GetNextPhase(), Roots: roots, Blockers: blockersFromProto(m.GetBlockers()),
		Quarantines: quarantinesFromProto(m.GetQuarantines())}
	for _, r := range m.GetReplicas() {
		st.Replicas = append(st.Replicas, ca.ReplicaStatus{ID: r.GetId(), Leader: r.GetLeader(), StartedAt: FromTS(r.GetStartedAt()),
			HeartbeatAge: time.Duration(r.GetHeartbeatAgeMillis()) * time.Millisecond})
	}
	for _, c := range m.GetClusters() {
		st.Clusters = append(st.Clusters, ca.ClusterRotationStatus{
			Cluster: c.GetCluster(), BundleSequence: c.GetBundleSequenceApplied(), IntermediateSerial: c.GetIntermediateSerial(),
			IntermediateRoot: c.GetIntermediateRoot(), IntermediateNotAfter: FromTS(c.GetIntermediateNotAfter()),
			LastContact: FromTS(c.GetLastContact()), Blockers: c.GetBlockers(), Gate: c.GetGate(),
			Istiod: store.IstiodStatus{State: c.GetIstiodState(), BundleSequence: c.GetIstiodBundleSequence(), Serial: c.GetIstiodSerial(),
				Probed: c.GetIstiodProbed(), Roots: c.GetIstiodRoots(), Since: FromTS(c.GetIstiodSince()),
				StaleSince: FromTS(c.GetIstiodStaleSince()), Detail: c.GetIstiodDetail()},
		})
	}
	return st, nil
}
