package ca

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/meshroot/meshroot/store"
)

// QuarantineStatus is a quarantine and how far the other clusters enforce
// it: which of them have applied the CRLs that list its intermediates.
type QuarantineStatus struct {
	store.Quarantine
	// Listed says every unexpired revoked intermediate of the cluster is
	// on its root's CRL (false right after the quarantine, until the
	// roots' CRLs are re-signed: milliseconds when the server runs).
	Listed bool
	// Required maps a root ID to the number of the first CRL of that root
	// that lists all of the cluster's revoked intermediates under it.
	Required map[string]uint64
	// Enforcement has one entry per other cluster that is not
	// quarantined itself, by name.
	Enforcement []ClusterEnforcement
}

// ClusterEnforcement says whether one cluster has applied the CRLs that
// list a quarantined cluster's intermediates: its agent reported a
// ca-crl.pem holding, for every root concerned, a CRL with at least the
// number that first listed them.
type ClusterEnforcement struct {
	Cluster     string
	Applied     bool
	LastContact time.Time
	// Detail says what is missing while not applied.
	Detail string
}

// Pending returns the clusters that have not applied the quarantine yet.
func (q QuarantineStatus) Pending() []ClusterEnforcement {
	var out []ClusterEnforcement
	for _, e := range q.Enforcement {
		if !e.Applied {
			out = append(out, e)
		}
	}
	return out
}

// ListQuarantines lists the quarantined clusters with, per other cluster,
// whether it enforces the quarantine.
func (s *Service) ListQuarantines(ctx context.Context) ([]QuarantineStatus, error) {
	qs, err := s.store.ListQuarantines(ctx)
	if err != nil || len(qs) == 0 {
		return nil, err
	}
	inters, err := s.store.ListIntermediatesByStatus(ctx, store.IntermediateRevoked)
	if err != nil {
		return nil, err
	}
	recs, err := s.store.ListRevocations(ctx)
	if err != nil {
		return nil, err
	}
	clusters, err := s.store.ListClusters(ctx)
	if err != nil {
		return nil, err
	}
	listedIn := make(map[string]uint64, len(recs))
	for _, r := range recs {
		listedIn[r.Serial] = r.ListedIn
	}
	// An intermediate revoked without a revocation record (before
	// records were kept) is on its root's CRL without a number: require
	// the root's current CRL, a conservative stand-in.
	current := map[string]uint64{}
	currentCRL := func(rootID string) (uint64, error) {
		if n, ok := current[rootID]; ok {
			return n, nil
		}
		c, err := s.store.GetCRL(ctx, RootCRLIssuer(rootID))
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return 0, err
		}
		current[rootID] = c.Number
		return c.Number, nil
	}
	quarantined := map[string]bool{}
	for _, q := range qs {
		quarantined[q.Cluster] = true
	}
	now := s.now()
	out := make([]QuarantineStatus, 0, len(qs))
	for _, q := range qs {
		st := QuarantineStatus{Quarantine: q, Listed: true, Required: map[string]uint64{}}
		for _, in := range inters {
			if in.Cluster != q.Cluster || in.Status != store.IntermediateRevoked || !in.NotAfter.After(now) {
				continue
			}
			n, recorded := listedIn[in.Serial]
			if !recorded {
				if n, err = currentCRL(in.RootID); err != nil {
					return nil, err
				}
			}
			if n == 0 {
				st.Listed = false
			}
			st.Required[in.RootID] = max(st.Required[in.RootID], n)
		}
		for _, c := range clusters {
			if quarantined[c.Name] {
				continue
			}
			st.Enforcement = append(st.Enforcement, enforcement(c, st))
		}
		out = append(out, st)
	}
	return out, nil
}

// enforcement compares what cluster c's agent reported it applied with
// what quarantine st requires.
func enforcement(c store.Cluster, st QuarantineStatus) ClusterEnforcement {
	e := ClusterEnforcement{Cluster: c.Name, LastContact: c.Status.LastContact}
	applied := c.Status.AppliedCRLs
	switch {
	case !st.Listed:
		e.Detail = "the roots' CRLs do not list its intermediates yet"
	case applied == nil && len(st.Required) > 0:
		e.Detail = "its agent has not reported a ca-crl.pem"
	case len(applied) == 0 && len(st.Required) > 0:
		e.Detail = "no ca-crl.pem in its cacerts (a CA lacks a current CRL: see meshroot_agent_crl_missing_cas)"
	default:
		ids := make([]string, 0, len(st.Required))
		for id := range st.Required {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			if have, want := applied[id], st.Required[id]; have < want {
				e.Detail = fmt.Sprintf("root %s: its ca-crl.pem holds CRL %d, CRL %d lists the intermediates", short(id), have, want)
				return e
			}
		}
		e.Applied = true
	}
	return e
}

// MaxAppliedCRLs bounds the root CRLs an agent reports as applied.
const MaxAppliedCRLs = 64

// checkAppliedCRLs bounds an agent's report of the root CRLs it applied.
func checkAppliedCRLs(applied map[string]uint64) error {
	if len(applied) > MaxAppliedCRLs {
		return refusef("applied CRLs report names %d roots: at most %d", len(applied), MaxAppliedCRLs)
	}
	for id := range applied {
		if id == "" || len(id) > 128 {
			return refusef("applied CRLs report: a root ID must be 1 to 128 bytes")
		}
	}
	return nil
}
