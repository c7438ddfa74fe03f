package ca

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/meshroot/meshroot/store"
)

// AddClusterRequest registers a cluster.
type AddClusterRequest struct {
	Name string
	// TrustDomain defaults to the authority's.
	TrustDomain string
	// Auth says how the cluster's service-account tokens are verified.
	Auth store.ClusterAuth
	// PermitDNS are DNS domains the cluster's intermediates may certify
	// besides the policy's (istio-system.svc by default): istiod's custom
	// hosts, or istiod in another namespace. A domain permits every name
	// under it.
	PermitDNS []string
	// PermitIPs are IP ranges (CIDR, or single addresses) the cluster's
	// intermediates may certify; without any they certify no IP address.
	PermitIPs []string
}

// AddCluster registers a cluster that may request intermediates.
func (s *Service) AddCluster(ctx context.Context, actor Actor, req AddClusterRequest) (store.Cluster, error) {
	c, err := s.addCluster(ctx, actor, req)
	if err != nil {
		return store.Cluster{}, s.auditRefusal(ctx, actor, "cluster.add", req.Name, err)
	}
	return c, nil
}

func (s *Service) addCluster(ctx context.Context, actor Actor, req AddClusterRequest) (store.Cluster, error) {
	name, td, auth := req.Name, req.TrustDomain, req.Auth
	if err := ValidateClusterName(name); err != nil {
		return store.Cluster{}, refuse(err)
	}
	if td == "" {
		var err error
		if td, err = s.store.Meta(ctx, MetaTrustDomain); err != nil {
			return store.Cluster{}, err
		}
		if td == "" {
			return store.Cluster{}, refusef("no trust domain: run `meshroot root init` first or pass --trust-domain")
		}
	}
	if _, err := ParseTrustDomain(td); err != nil {
		return store.Cluster{}, refuse(err)
	}
	if err := validateClusterAuth(auth); err != nil {
		return store.Cluster{}, refuse(err)
	}
	for _, d := range req.PermitDNS {
		if err := ValidateDNSDomain(d); err != nil {
			return store.Cluster{}, refuse(err)
		}
	}
	ips, err := ParsePermittedIPs(req.PermitIPs)
	if err != nil {
		return store.Cluster{}, refuse(err)
	}
	permitIPs := make([]string, 0, len(ips))
	for _, n := range ips {
		permitIPs = append(permitIPs, n.String())
	}
	c := store.Cluster{Name: name, TrustDomain: td, CreatedAt: s.now().UTC(), Auth: auth, PermitDNS: req.PermitDNS, PermitIPs: permitIPs}
	err = s.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.CreateCluster(ctx, c); err != nil {
			if errors.Is(err, store.ErrAlreadyExists) {
				return refusef("cluster %s is already registered", name)
			}
			return err
		}
		return s.audit(ctx, tx, actor, "cluster.add", name, "ok", map[string]any{
			"trust_domain": td, "k8s_issuer": auth.Issuer, "k8s_jwks": len(auth.JWKS) > 0, "k8s_oidc_discovery": auth.OIDCDiscovery,
			"k8s_tokenreview": len(auth.Kubeconfig) > 0, "service_accounts": auth.ServiceAccounts,
			"permit_dns": c.PermitDNS, "permit_ips": c.PermitIPs,
		})
	})
	return c, err
}

// ListClusters returns the registered clusters by name.
func (s *Service) ListClusters(ctx context.Context) ([]store.Cluster, error) {
	return s.store.ListClusters(ctx)
}

// cluster loads a registered cluster, refusing an unknown name.
func (s *Service) cluster(ctx context.Context, name string) (store.Cluster, error) {
	if err := ValidateClusterName(name); err != nil {
		return store.Cluster{}, refuse(err)
	}
	c, err := s.store.GetCluster(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return store.Cluster{}, refusef("cluster %s is not registered: run `meshroot cluster add %s` first", name, name)
	}
	if err != nil {
		return store.Cluster{}, fmt.Errorf("load cluster %s: %w", name, err)
	}
	return c, nil
}

// maxClusterAuthField bounds each blob of cluster authentication settings.
const maxClusterAuthField = 256 << 10

// validateClusterAuth checks the shape of service-account verification
// settings; whether they work is seen at the first request.
func validateClusterAuth(a store.ClusterAuth) error {
	for name, b := range map[string][]byte{"JWKS": a.JWKS, "CA bundle": a.CAPEM, "kubeconfig": a.Kubeconfig} {
		if len(b) > maxClusterAuthField {
			return fmt.Errorf("cluster %s is %d bytes: at most %d", name, len(b), maxClusterAuthField)
		}
	}
	if (len(a.JWKS) > 0 || a.OIDCDiscovery) && a.Issuer == "" {
		return errors.New("service-account token verification by JWKS or OIDC discovery needs the issuer (--k8s-issuer)")
	}
	if a.OIDCDiscovery && !strings.HasPrefix(a.Issuer, "https://") {
		return fmt.Errorf("OIDC discovery needs an https issuer, not %q", a.Issuer)
	}
	if len(a.JWKS) > 0 && !json.Valid(a.JWKS) {
		return errors.New("the JWKS is not valid JSON")
	}
	for _, sa := range a.ServiceAccounts {
		ns, name, ok := strings.Cut(sa, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return fmt.Errorf("service account %q is not namespace/name", sa)
		}
	}
	return nil
}

// RemoveCluster unregisters a cluster: its credentials stop working at once
// (join tokens are deleted; service-account tokens and its intermediate no
// longer match a registered cluster). Issued intermediates stay on record.
func (s *Service) RemoveCluster(ctx context.Context, actor Actor, name string) error {
	if _, err := s.cluster(ctx, name); err != nil {
		return s.auditRefusal(ctx, actor, "cluster.remove", name, err)
	}
	return s.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.DeleteCluster(ctx, name); err != nil {
			return err
		}
		return s.audit(ctx, tx, actor, "cluster.remove", name, "ok", nil)
	})
}

// RecordContact stores that a cluster's agent was heard from now, with what
// it reported; zero fields keep their previous value.
func (s *Service) RecordContact(ctx context.Context, name string, st store.ClusterStatus) error {
	return s.store.Update(ctx, func(tx store.Tx) error {
		c, err := tx.GetCluster(ctx, name)
		if err != nil {
			return err
		}
		cur := c.Status
		cur.LastContact = s.now().UTC()
		if st.BundleSequence != 0 {
			cur.BundleSequence = st.BundleSequence
		}
		if st.IntermediateSerial != "" {
			cur.IntermediateSerial = st.IntermediateSerial
		}
		return tx.UpdateClusterStatus(ctx, name, cur)
	})
}

// CreateJoinToken stores a join token made by the caller (only its hash is
// kept) for a registered cluster, and audits it without the secret.
func (s *Service) CreateJoinToken(ctx context.Context, actor Actor, t store.JoinToken) error {
	if _, err := s.cluster(ctx, t.Cluster); err != nil {
		return s.auditRefusal(ctx, actor, "token.create", t.Cluster, err)
	}
	return s.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.CreateJoinToken(ctx, t); err != nil {
			return err
		}
		return s.audit(ctx, tx, actor, "token.create", t.Cluster, "ok", map[string]any{"token_id": t.ID, "expires_at": t.ExpiresAt})
	})
}
