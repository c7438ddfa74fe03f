package wire

import (
	"fmt"
	"time"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// AdminCertToProto converts an admin client certificate record.
func AdminCertToProto(c store.AdminCert) *meshrootv1.AdminCert {
	return &meshrootv1.AdminCert{Serial: c.Serial, Name: c.Name, Role: c.Role,
		IssuedAt: TS(c.IssuedAt), NotAfter: TS(c.NotAfter), RevokedAt: TS(c.RevokedAt)}
}

// AdminCertFromProto converts an admin client certificate record back.
func AdminCertFromProto(m *meshrootv1.AdminCert) store.AdminCert {
	return store.AdminCert{Serial: m.GetSerial(), Name: m.GetName(), Role: m.GetRole(),
		IssuedAt: FromTS(m.GetIssuedAt()), NotAfter: FromTS(m.GetNotAfter()), RevokedAt: FromTS(m.GetRevokedAt())}
}

// AdminCertsToProto converts a list of admin certificate records.
func AdminCertsToProto(cs []store.AdminCert) *meshrootv1.ListAdminCertsResponse {
	out := &meshrootv1.ListAdminCertsResponse{}
	for _, c := range cs {
		out.Certs = append(out.Certs, AdminCertToProto(c))
	}
	return out
}

// AdminCertsFromProto converts a list of admin certificate records back.
func AdminCertsFromProto(m *meshrootv1.ListAdminCertsResponse) []store.AdminCert {
	out := make([]store.AdminCert, 0, len(m.GetCerts()))
	for _, c := range m.GetCerts() {
		out = append(out, AdminCertFromProto(c))
	}
	return out
}

// IssueAdminCertRequestToProto converts an admin certificate request.
func IssueAdminCertRequestToProto(r ca.AdminCertRequest) *meshrootv1.IssueAdminCertRequest {
	return &meshrootv1.IssueAdminCertRequest{Name: r.Name, Role: string(r.Role), TtlSeconds: int64(r.TTL / time.Second), Csr: r.CSR}
}

// IssueAdminCertRequestFromProto converts an admin certificate request back.
func IssueAdminCertRequestFromProto(m *meshrootv1.IssueAdminCertRequest) ca.AdminCertRequest {
	return ca.AdminCertRequest{Name: m.GetName(), Role: ca.AdminRole(m.GetRole()), TTL: time.Duration(m.GetTtlSeconds()) * time.Second, CSR: m.GetCsr()}
}

// AdminCertIssuedToProto converts an issued admin certificate.
func AdminCertIssuedToProto(v ca.AdminCertIssued) *meshrootv1.IssueAdminCertResponse {
	return &meshrootv1.IssueAdminCertResponse{Cert: AdminCertToProto(v.Record), ChainPem: ca.EncodeCerts(v.Chain)}
}

// AdminCertIssuedFromProto converts an issued admin certificate back.
func AdminCertIssuedFromProto(m *meshrootv1.IssueAdminCertResponse) (ca.AdminCertIssued, error) {
	chain, err := ca.ParseCerts(m.GetChainPem())
	if err != nil || len(chain) < 2 {
		return ca.AdminCertIssued{}, fmt.Errorf("the server's admin certificate chain is unreadable (%v, %d certificates)", err, len(chain))
	}
	return ca.AdminCertIssued{Record: AdminCertFromProto(m.GetCert()), Chain: chain}, nil
}
