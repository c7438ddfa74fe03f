package wire

import (
	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// ClusterToProto converts a stored cluster. The TokenReview kubeconfig is a
// credential and is never sent back; HasK8SKubeconfig says whether one is set.
func ClusterToProto(c store.Cluster) *meshrootv1.Cluster {
	auth := AuthToProto(c.Auth)
	auth.K8SKubeconfig, auth.HasK8SKubeconfig = nil, len(c.Auth.Kubeconfig) > 0
	return &meshrootv1.Cluster{
		Name: c.Name, TrustDomain: c.TrustDomain, CreatedAt: TS(c.CreatedAt), Auth: auth,
		PermitDns: c.PermitDNS, PermitIps: c.PermitIPs,
		Status: &meshrootv1.ClusterStatus{
			LastContact: TS(c.Status.LastContact), BundleSequence: c.Status.BundleSequence,
			IntermediateSerial: c.Status.IntermediateSerial,
		},
	}
}

// ClusterFromProto converts a cluster message.
func ClusterFromProto(m *meshrootv1.Cluster) store.Cluster {
	c := store.Cluster{Name: m.GetName(), TrustDomain: m.GetTrustDomain(), CreatedAt: FromTS(m.GetCreatedAt()),
		PermitDNS: m.GetPermitDns(), PermitIPs: m.GetPermitIps()}
	if a := m.GetAuth(); a != nil {
		c.Auth = AuthFromProto(a)
	}
	if s := m.GetStatus(); s != nil {
		c.Status = store.ClusterStatus{LastContact: FromTS(s.GetLastContact()), BundleSequence: s.GetBundleSequence(), IntermediateSerial: s.GetIntermediateSerial()}
	}
	return c
}

// AuthFromProto converts cluster authentication settings.
func AuthFromProto(a *meshrootv1.ClusterAuth) store.ClusterAuth {
	return store.ClusterAuth{
		Issuer: a.GetK8SIssuer(), JWKS: a.GetK8SJwks(), OIDCDiscovery: a.GetK8SOidcDiscovery(), CAPEM: a.GetK8SCa(),
		Kubeconfig: a.GetK8SKubeconfig(), ServiceAccounts: a.GetServiceAccounts(),
	}
}

// AuthToProto converts cluster authentication settings for AddCluster,
// kubeconfig included.
func AuthToProto(a store.ClusterAuth) *meshrootv1.ClusterAuth {
	return &meshrootv1.ClusterAuth{
		K8SIssuer: a.Issuer, K8SJwks: a.JWKS, K8SOidcDiscovery: a.OIDCDiscovery, K8SCa: a.CAPEM,
		K8SKubeconfig: a.Kubeconfig, ServiceAccounts: a.ServiceAccounts,
	}
}

// AddClusterRequestToProto converts a cluster registration.
func AddClusterRequestToProto(r ca.AddClusterRequest) *meshrootv1.AddClusterRequest {
	return &meshrootv1.AddClusterRequest{Name: r.Name, TrustDomain: r.TrustDomain, Auth: AuthToProto(r.Auth), PermitDns: r.PermitDNS, PermitIps: r.PermitIPs}
}

// AddClusterRequestFromProto converts a cluster registration message.
func AddClusterRequestFromProto(m *meshrootv1.AddClusterRequest) ca.AddClusterRequest {
	return ca.AddClusterRequest{Name: m.GetName(), TrustDomain: m.GetTrustDomain(), Auth: AuthFromProto(m.GetAuth()), PermitDNS: m.GetPermitDns(), PermitIPs: m.GetPermitIps()}
}

// ClusterDetailToProto converts one cluster's detail.
func ClusterDetailToProto(d ca.ClusterDetail) *meshrootv1.ClusterDetail {
	m := &meshrootv1.ClusterDetail{Cluster: ClusterToProto(d.Cluster)}
	m.Cluster.Auth.HasK8SKubeconfig = d.TokenReview
	if d.Current != nil {
		m.Current = IntermediateToProto(*d.Current)
	}
	if d.Quarantine != nil {
		m.Quarantine = QuarantineToProto(*d.Quarantine)
	}
	return m
}

// ClusterDetailFromProto converts a cluster detail message.
func ClusterDetailFromProto(m *meshrootv1.ClusterDetail) ca.ClusterDetail {
	d := ca.ClusterDetail{Cluster: ClusterFromProto(m.GetCluster()), TokenReview: m.GetCluster().GetAuth().GetHasK8SKubeconfig()}
	if c := m.GetCurrent(); c != nil {
		in := IntermediateFromProto(c)
		d.Current = &in
	}
	if q := m.GetQuarantine(); q != nil {
		qq := QuarantineFromProto(q)
		d.Quarantine = &qq
	}
	return d
}

// IntermediateToProto converts a stored intermediate.
func IntermediateToProto(in store.Intermediate) *meshrootv1.Intermediate {
	return &meshrootv1.Intermediate{
		Serial: in.Serial, Cluster: in.Cluster, RootId: in.RootID, Status: string(in.Status),
		NotBefore: TS(in.NotBefore), NotAfter: TS(in.NotAfter),
	}
}

// IntermediateFromProto converts an intermediate message.
func IntermediateFromProto(m *meshrootv1.Intermediate) store.Intermediate {
	return store.Intermediate{
		Serial: m.GetSerial(), Cluster: m.GetCluster(), RootID: m.GetRootId(), Status: store.IntermediateStatus(m.GetStatus()),
		NotBefore: FromTS(m.GetNotBefore()), NotAfter: FromTS(m.GetNotAfter()),
	}
}

// AuditToProto converts an audit entry.
func AuditToProto(e store.AuditEntry) *meshrootv1.AuditEntry {
	return &meshrootv1.AuditEntry{
		Seq: e.Seq, Time: TS(e.Time), Actor: e.Actor, Action: e.Action, Target: e.Target,
		Result: e.Result, Details: e.Details, Hash: e.Hash,
	}
}

// AuditFromProto converts an audit entry message.
func AuditFromProto(m *meshrootv1.AuditEntry) store.AuditEntry {
	return store.AuditEntry{
		Seq: m.GetSeq(), Time: FromTS(m.GetTime()), Actor: m.GetActor(), Action: m.GetAction(), Target: m.GetTarget(),
		Result: m.GetResult(), Details: m.GetDetails(), Hash: m.GetHash(),
	}
}

// JoinTokenRequestToProto converts a join token request.
func JoinTokenRequestToProto(r ca.JoinTokenRequest) *meshrootv1.CreateTokenRequest {
	return &meshrootv1.CreateTokenRequest{Cluster: r.Cluster, TtlSeconds: Seconds(r.TTL)}
}

// JoinTokenRequestFromProto converts a join token request message.
func JoinTokenRequestFromProto(m *meshrootv1.CreateTokenRequest) ca.JoinTokenRequest {
	return ca.JoinTokenRequest{Cluster: m.GetCluster(), TTL: FromSeconds(m.GetTtlSeconds())}
}

// JoinTokenToProto converts a join token just made.
func JoinTokenToProto(t ca.JoinToken) *meshrootv1.CreateTokenResponse {
	return &meshrootv1.CreateTokenResponse{Token: t.Token, ExpiresAt: TS(t.ExpiresAt)}
}

// JoinTokenFromProto converts a join token message; the response does not
// repeat the cluster, so the caller names it.
func JoinTokenFromProto(m *meshrootv1.CreateTokenResponse, cluster string) ca.JoinToken {
	return ca.JoinToken{Token: m.GetToken(), Cluster: cluster, ExpiresAt: FromTS(m.GetExpiresAt())}
}
