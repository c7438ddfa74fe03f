package wire

import (
	"fmt"
	"slices"
	"strings"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// CRLSetToProto converts the fleet's CRL set.
func CRLSetToProto(s ca.CRLSet) *meshrootv1.CRLSet {
	return &meshrootv1.CRLSet{Crls: s.CRLs, Intermediates: DERList(s.Intermediates), Missing: s.Missing}
}

// CRLSetFromProto converts a CRL set message, checking that the
// intermediates parse (the CRLs are checked by whoever uses them).
func CRLSetFromProto(m *meshrootv1.CRLSet) (ca.CRLSet, error) {
	inters, err := ParseDERList(m.GetIntermediates())
	if err != nil {
		return ca.CRLSet{}, fmt.Errorf("CRL set: %w", err)
	}
	return ca.CRLSet{CRLs: m.GetCrls(), Intermediates: inters, Missing: m.GetMissing()}, nil
}

// QuarantineToProto converts a quarantine.
func QuarantineToProto(q store.Quarantine) *meshrootv1.Quarantine {
	return &meshrootv1.Quarantine{Cluster: q.Cluster, Reason: q.Reason, At: TS(q.At), Actor: q.Actor}
}

// QuarantineFromProto converts a quarantine message.
func QuarantineFromProto(m *meshrootv1.Quarantine) store.Quarantine {
	return store.Quarantine{Cluster: m.GetCluster(), Reason: m.GetReason(), At: FromTS(m.GetAt()), Actor: m.GetActor()}
}

// QuarantineResultToProto converts a quarantine's result.
func QuarantineResultToProto(r ca.QuarantineResult) *meshrootv1.QuarantineClusterResponse {
	return &meshrootv1.QuarantineClusterResponse{Quarantine: QuarantineToProto(r.Quarantine), Revoked: r.Revoked, DryRun: r.DryRun}
}

// QuarantineResultFromProto converts a quarantine response.
func QuarantineResultFromProto(m *meshrootv1.QuarantineClusterResponse) ca.QuarantineResult {
	return ca.QuarantineResult{Quarantine: QuarantineFromProto(m.GetQuarantine()), Revoked: m.GetRevoked(), DryRun: m.GetDryRun()}
}

// QuarantineStatusToProto converts a quarantine with its enforcement.
func QuarantineStatusToProto(q ca.QuarantineStatus) *meshrootv1.Quarantine {
	m := QuarantineToProto(q.Quarantine)
	m.Listed = q.Listed
	for _, e := range q.Enforcement {
		m.Enforcement = append(m.Enforcement, &meshrootv1.QuarantineEnforcement{
			Cluster: e.Cluster, Applied: e.Applied, LastContact: TS(e.LastContact), Detail: e.Detail})
	}
	return m
}

// QuarantineStatusFromProto converts a quarantine message with its
// enforcement.
func QuarantineStatusFromProto(m *meshrootv1.Quarantine) ca.QuarantineStatus {
	q := ca.QuarantineStatus{Quarantine: QuarantineFromProto(m), Listed: m.GetListed()}
	for _, e := range m.GetEnforcement() {
		q.Enforcement = append(q.Enforcement, ca.ClusterEnforcement{
			Cluster: e.GetCluster(), Applied: e.GetApplied(), LastContact: FromTS(e.GetLastContact()), Detail: e.GetDetail()})
	}
	return q
}

// QuarantinesToProto converts a list of quarantines.
func QuarantinesToProto(qs []ca.QuarantineStatus) *meshrootv1.ListQuarantinesResponse {
	return &meshrootv1.ListQuarantinesResponse{Quarantines: quarantinesToProto(qs)}
}

func quarantinesToProto(qs []ca.QuarantineStatus) []*meshrootv1.Quarantine {
	var out []*meshrootv1.Quarantine
	for _, q := range qs {
		out = append(out, QuarantineStatusToProto(q))
	}
	return out
}

// QuarantinesFromProto converts a list of quarantines message.
func QuarantinesFromProto(m *meshrootv1.ListQuarantinesResponse) []ca.QuarantineStatus {
	return quarantinesFromProto(m.GetQuarantines())
}

func quarantinesFromProto(ms []*meshrootv1.Quarantine) []ca.QuarantineStatus {
	var out []ca.QuarantineStatus
	for _, q := range ms {
		out = append(out, QuarantineStatusFromProto(q))
	}
	return out
}

// AppliedCRLsFromReport returns the root CRLs a status report says the
// cluster applied: nil when the agent did not report them.
func AppliedCRLsFromReport(r *meshrootv1.ReportStatusRequest) map[string]uint64 {
	if !r.GetCrlsReported() {
		return nil
	}
	out := make(map[string]uint64, len(r.GetAppliedCrls()))
	for _, a := range r.GetAppliedCrls() {
		out[a.GetRootId()] = max(out[a.GetRootId()], a.GetNumber())
	}
	return out
}

// SetAppliedCRLs puts the root CRLs the cluster applied (root ID to CRL
// number; empty: no ca-crl.pem) into the status report r.
func SetAppliedCRLs(r *meshrootv1.ReportStatusRequest, applied map[string]uint64) {
	r.CrlsReported = true
	r.AppliedCrls = nil
	for id, n := range applied {
		r.AppliedCrls = append(r.AppliedCrls, &meshrootv1.AppliedCRL{RootId: id, Number: n})
	}
	slices.SortFunc(r.AppliedCrls, func(a, b *meshrootv1.AppliedCRL) int { return strings.Compare(a.RootId, b.RootId) })
}

// QuarantineRequestFromProto converts a quarantine request.
func QuarantineRequestFromProto(m *meshrootv1.QuarantineClusterRequest) ca.QuarantineRequest {
	return ca.QuarantineRequest{Cluster: m.GetCluster(), Reason: m.GetReason(), DryRun: m.GetDryRun()}
}
