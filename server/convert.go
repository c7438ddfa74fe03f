package server

import (
	"crypto/x509"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// Conversions between the API's messages and meshroot's own types, used by
// the servers here and by the CLI's client side.

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func fromTS(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime()
}

// RootToProto converts a stored root.
func RootToProto(r store.Root) (*meshrootv1.Root, error) {
	chain, err := ca.ParseCerts(r.ChainPEM)
	if err != nil {
		return nil, fmt.Errorf("root %s: %w", r.ID, err)
	}
	return &meshrootv1.Root{
		Id: r.ID, TrustDomain: r.TrustDomain, State: string(r.State), KeyRef: r.KeyRef,
		Chain: derList(chain), NotAfter: ts(r.NotAfter), CreatedAt: ts(r.CreatedAt),
	}, nil
}

// RootFromProto converts a root message.
func RootFromProto(m *meshrootv1.Root) (store.Root, error) {
	chain, err := parseDERList(m.GetChain())
	if err != nil {
		return store.Root{}, fmt.Errorf("root %s: %w", m.GetId(), err)
	}
	return store.Root{
		ID: m.GetId(), TrustDomain: m.GetTrustDomain(), State: store.RootState(m.GetState()), KeyRef: m.GetKeyRef(),
		ChainPEM: ca.EncodeCerts(chain), NotAfter: fromTS(m.GetNotAfter()), CreatedAt: fromTS(m.GetCreatedAt()),
	}, nil
}

// ClusterToProto converts a stored cluster. The TokenReview kubeconfig is a
// credential and is never sent back; HasK8SKubeconfig says whether one is set.
func ClusterToProto(c store.Cluster) *meshrootv1.Cluster {
	return &meshrootv1.Cluster{
		Name: c.Name, TrustDomain: c.TrustDomain, CreatedAt: ts(c.CreatedAt),
		Auth: &meshrootv1.ClusterAuth{
			K8SIssuer: c.Auth.Issuer, K8SJwks: c.Auth.JWKS, K8SOidcDiscovery: c.Auth.OIDCDiscovery, K8SCa: c.Auth.CAPEM,
			HasK8SKubeconfig: len(c.Auth.Kubeconfig) > 0, ServiceAccounts: c.Auth.ServiceAccounts,
		},
		Status: &meshrootv1.ClusterStatus{
			LastContact: ts(c.Status.LastContact), BundleSequence: c.Status.BundleSequence,
			IntermediateSerial: c.Status.IntermediateSerial,
		},
	}
}

// ClusterFromProto converts a cluster message.
func ClusterFromProto(m *meshrootv1.Cluster) store.Cluster {
	c := store.Cluster{Name: m.GetName(), TrustDomain: m.GetTrustDomain(), CreatedAt: fromTS(m.GetCreatedAt())}
	if a := m.GetAuth(); a != nil {
		c.Auth = AuthFromProto(a)
	}
	if s := m.GetStatus(); s != nil {
		c.Status = store.ClusterStatus{LastContact: fromTS(s.GetLastContact()), BundleSequence: s.GetBundleSequence(), IntermediateSerial: s.GetIntermediateSerial()}
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

// IntermediateToProto converts a stored intermediate.
func IntermediateToProto(in store.Intermediate) *meshrootv1.Intermediate {
	return &meshrootv1.Intermediate{
		Serial: in.Serial, Cluster: in.Cluster, RootId: in.RootID, Status: string(in.Status),
		NotBefore: ts(in.NotBefore), NotAfter: ts(in.NotAfter),
	}
}

// IntermediateFromProto converts an intermediate message.
func IntermediateFromProto(m *meshrootv1.Intermediate) store.Intermediate {
	return store.Intermediate{
		Serial: m.GetSerial(), Cluster: m.GetCluster(), RootID: m.GetRootId(), Status: store.IntermediateStatus(m.GetStatus()),
		NotBefore: fromTS(m.GetNotBefore()), NotAfter: fromTS(m.GetNotAfter()),
	}
}

// AuditToProto converts an audit entry.
func AuditToProto(e store.AuditEntry) *meshrootv1.AuditEntry {
	return &meshrootv1.AuditEntry{
		Seq: e.Seq, Time: ts(e.Time), Actor: e.Actor, Action: e.Action, Target: e.Target,
		Result: e.Result, Details: e.Details, Hash: e.Hash,
	}
}

// AuditFromProto converts an audit entry message.
func AuditFromProto(m *meshrootv1.AuditEntry) store.AuditEntry {
	return store.AuditEntry{
		Seq: m.GetSeq(), Time: fromTS(m.GetTime()), Actor: m.GetActor(), Action: m.GetAction(), Target: m.GetTarget(),
		Result: m.GetResult(), Details: m.GetDetails(), Hash: m.GetHash(),
	}
}

// IssuedFromProto converts a SignIntermediate response back into what the
// authority returned, checking that it parses.
func IssuedFromProto(m *meshrootv1.SignIntermediateResponse, trustDomain string) (ca.Issued, error) {
	chain, err := parseDERList(m.GetCertChain())
	if err != nil {
		return ca.Issued{}, fmt.Errorf("certificate chain: %w", err)
	}
	roots, err := parseDERList(m.GetTrustedRoots())
	if err != nil {
		return ca.Issued{}, fmt.Errorf("trusted roots: %w", err)
	}
	if len(chain) == 0 || len(roots) == 0 {
		return ca.Issued{}, fmt.Errorf("the server sent an empty chain or no roots")
	}
	return ca.Issued{
		Cert: chain[0], Chain: chain, RootID: m.GetRootId(),
		Bundle: ca.TrustBundle{TrustDomain: trustDomain, Roots: roots, Sequence: m.GetBundleSequence()},
	}, nil
}

// BundleFromProto converts a trust bundle message.
func BundleFromProto(m *meshrootv1.TrustBundle) (ca.TrustBundle, error) {
	roots, err := parseDERList(m.GetRoots())
	if err != nil {
		return ca.TrustBundle{}, fmt.Errorf("trust bundle: %w", err)
	}
	return ca.TrustBundle{
		TrustDomain: m.GetTrustDomain(), Roots: roots, Sequence: m.GetSequence(),
		RefreshHint: time.Duration(m.GetRefreshHintSeconds()) * time.Second,
	}, nil
}

func parseDERList(ders [][]byte) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, len(ders))
	for i, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %v", i+1, err)
		}
		out[i] = c
	}
	return out, nil
}
