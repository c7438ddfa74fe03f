package ca

import (
	"context"
	"errors"
	"fmt"

	"github.com/meshroot/meshroot/store"
)

// MaxQuarantineReason bounds a quarantine's reason text.
const MaxQuarantineReason = 512

// QuarantineAdmin cuts a cluster out of the trust domain and lets it back.
type QuarantineAdmin interface {
	QuarantineCluster(ctx context.Context, req QuarantineRequest) (QuarantineResult, error)
	ReleaseCluster(ctx context.Context, name string) (store.Quarantine, error)
	ListQuarantines(ctx context.Context) ([]QuarantineStatus, error)
}

// QuarantineRequest asks to quarantine a cluster.
type QuarantineRequest struct {
	Cluster string
	Reason  string
	DryRun  bool
}

// QuarantineResult is what a quarantine did (or, in a dry run, would do).
type QuarantineResult struct {
	Quarantine store.Quarantine
	// Revoked are the serials of the intermediates revoked by it.
	Revoked []string
	DryRun  bool
}

// QuarantineCluster revokes every intermediate of a cluster (reason
// cACompromise, so the roots' CRLs list them) and refuses all issuance for
// it, whatever the credential, until ReleaseCluster. In one transaction,
// audited; a dry run lists what would be revoked.
func (s *Service) QuarantineCluster(ctx context.Context, req QuarantineRequest) (QuarantineResult, error) {
	actor := ActorFrom(ctx)
	res, err := s.quarantine(ctx, actor, req)
	if err != nil {
		return res, s.auditRefusal(ctx, actor, "cluster.quarantine", req.Cluster, err)
	}
	return res, nil
}

func (s *Service) quarantine(ctx context.Context, actor Actor, req QuarantineRequest) (QuarantineResult, error) {
	res := QuarantineResult{DryRun: req.DryRun}
	if req.Reason == "" || len(req.Reason) > MaxQuarantineReason {
		return res, refusef("a quarantine needs a reason of 1 to %d bytes: say why, it is shown to the cluster's agent and audited", MaxQuarantineReason)
	}
	if _, err := s.cluster(ctx, req.Cluster); err != nil {
		return res, err
	}
	q := store.Quarantine{Cluster: req.Cluster, Reason: req.Reason, At: s.now().UTC(), Actor: string(actor)}
	res.Quarantine = q
	inters, err := s.store.ListIntermediates(ctx, req.Cluster)
	if err != nil {
		return res, err
	}
	for _, in := range inters {
		if in.Status != store.IntermediateRevoked {
			res.Revoked = append(res.Revoked, in.Serial)
		}
	}
	if req.DryRun {
		return res, nil
	}
	err = s.store.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.GetCluster(ctx, req.Cluster); errors.Is(err, store.ErrNotFound) {
			return refusef("cluster %s was removed meanwhile", req.Cluster)
		} else if err != nil {
			return err
		}
		if err := tx.SetQuarantine(ctx, q); err != nil {
			return err
		}
		revoked, err := tx.RevokeClusterIntermediates(ctx, req.Cluster)
		if err != nil {
			return err
		}
		for _, serial := range revoked {
			if err := tx.RecordRevocation(ctx, store.Revocation{Serial: serial, Reason: ReasonCACompromise, RevokedAt: q.At}); err != nil {
				return err
			}
		}
		res.Revoked = revoked
		return s.audit(ctx, tx, actor, "cluster.quarantine", req.Cluster, "ok", map[string]any{"reason": BoundAuditText(req.Reason, MaxAuditReason), "revoked": revoked})
	})
	return res, err
}

// ReleaseCluster lifts a cluster's quarantine. Its revoked intermediates
// stay revoked: the cluster needs a fresh join token or a service-account
// login to get a new one.
func (s *Service) ReleaseCluster(ctx context.Context, name string) (store.Quarantine, error) {
	actor := ActorFrom(ctx)
	var q store.Quarantine
	err := s.store.Update(ctx, func(tx store.Tx) error {
		var err error
		if q, err = tx.GetQuarantine(ctx, name); errors.Is(err, store.ErrNotFound) {
			return refusef("cluster %s is not quarantined", name)
		} else if err != nil {
			return err
		}
		if err := tx.DeleteQuarantine(ctx, name); err != nil {
			return err
		}
		return s.audit(ctx, tx, actor, "cluster.release", name, "ok", map[string]any{"quarantined_at": q.At, "reason": q.Reason})
	})
	if err != nil {
		return q, s.auditRefusal(ctx, actor, "cluster.release", name, err)
	}
	return q, nil
}

// refuseQuarantined refuses issuance for a quarantined cluster, with the
// reason, inside the issuing transaction.
func refuseQuarantined(ctx context.Context, r store.RevocationReader, cluster string) error {
	q, err := r.GetQuarantine(ctx, cluster)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return refuse(fmt.Errorf("cluster %s is quarantined since %s: %q; an operator must run `meshroot cluster release %s`, then the cluster needs a fresh join token or service-account login",
		cluster, q.At.Format("2006-01-02T15:04:05Z"), BoundAuditText(q.Reason, MaxQuarantineReason), cluster))
}
