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
func (s *Service) AddCluster(ctx context.Context, req AddClusterRequest) (store.Cluster, error) {
	actor := ActorFrom(ctx)
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
	if len(a.Kubeconfig) > 0 {
		if err := CheckKubeconfigFileRefs(a.Kubeconfig); err != nil {
			return fmt.Errorf("TokenReview: %w", err)
		}
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

// RemoveCluster unregisters a cluster: its credentials stop working at once.
// In one transaction its join tokens are deleted and every intermediate
// issued to it is revoked, so that none can renew, not even for a cluster
// registered later under the same name. Issued intermediates stay on record.
func (s *Service) RemoveCluster(ctx context.Context, name string) error {
	actor := ActorFrom(ctx)
	if _, err := s.cluster(ctx, name); err != nil {
		return s.auditRefusal(ctx, actor, "cluster.remove", name, err)
	}
	return s.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.DeleteCluster(ctx, name); errors.Is(err, store.ErrNotFound) {
			return refusef("cluster %s is not registered (it was removed meanwhile)", name)
		} else if err != nil {
			return err
		}
		serials, err := tx.RevokeClusterIntermediates(ctx, name)
		if err != nil {
			return err
		}
		details := map[string]any{"revoked_intermediates": len(serials)}
		if len(serials) > 0 {
			// The newest ones are those that can still matter; the
			// count says how many more were revoked.
			details["revoked_serials"] = serials[max(0, len(serials)-maxAuditedSerials):]
		}
		return s.audit(ctx, tx, actor, "cluster.remove", name, "ok", details)
	})
}

// maxAuditedSerials bounds the serials a cluster.remove audit row lists.
const maxAuditedSerials = 100

// recordContact stores that the agent of registration reg was heard from
// now, with what it reported; zero fields keep their previous value. It is
// refused when reg is no longer the cluster's registration.
func (s *Service) recordContact(ctx context.Context, reg store.Registration, st store.ClusterStatus) error {
	st.LastContact = s.now().UTC()
	return s.store.Update(ctx, func(tx store.Tx) error {
		// One conditional update: the registration's check is its WHERE
		// clause, so no read of the row comes before it (a report of every
		// cluster at each change of the fleet: the server's most frequent
		// write). The read below only says why it was refused.
		err := tx.RecordContact(ctx, reg.Name, reg.CreatedAt, st)
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		c, err := tx.GetCluster(ctx, reg.Name)
		if errors.Is(err, store.ErrNotFound) {
			return refusef("cluster %s was removed: its agent's report is not recorded", reg.Name)
		} else if err != nil {
			return err
		}
		if !c.CreatedAt.Equal(reg.CreatedAt) {
			return refusef("cluster %s was removed and registered again during the report: the report of the earlier registration is not recorded", reg.Name)
		}
		// The same registration, its creation time stored in another
		// form than the store writes today (the UPDATE compares the
		// text): merge and write the row as read.
		return tx.UpdateClusterStatus(ctx, reg.Name, mergeContact(c.Status, st))
	})
}

// mergeContact is cur with what report st sets (RecordContact's merge):
// its LastContact, and its other fields where set; the gate is kept.
func mergeContact(cur, st store.ClusterStatus) store.ClusterStatus {
	cur.LastContact = st.LastContact
	if st.BundleSequence != 0 {
		cur.BundleSequence = st.BundleSequence
	}
	if st.IntermediateSerial != "" {
		cur.IntermediateSerial = st.IntermediateSerial
	}
	if st.Istiod.State != "" {
		cur.Istiod = st.Istiod
	}
	if st.AppliedCRLs != nil {
		cur.AppliedCRLs = st.AppliedCRLs
	}
	return cur
}
