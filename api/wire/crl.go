package wire

import (
	"fmt"

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

// QuarantinesToProto converts a list of quarantines.
func QuarantinesToProto(qs []store.Quarantine) *meshrootv1.ListQuarantinesResponse {
	out := &meshrootv1.ListQuarantinesResponse{}
	for _, q := range qs {
		out.Quarantines = append(out.Quarantines, QuarantineToProto(q))
	}
	return out
}

// QuarantinesFromProto converts a list of quarantines message.
func QuarantinesFromProto(m *meshrootv1.ListQuarantinesResponse) []store.Quarantine {
	var out []store.Quarantine
	for _, q := range m.GetQuarantines() {
		out = append(out, QuarantineFromProto(q))
	}
	return out
}

// QuarantineRequestFromProto converts a quarantine request.
func QuarantineRequestFromProto(m *meshrootv1.QuarantineClusterRequest) ca.QuarantineRequest {
	return ca.QuarantineRequest{Cluster: m.GetCluster(), Reason: m.GetReason(), DryRun: m.GetDryRun()}
}
