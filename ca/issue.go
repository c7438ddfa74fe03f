package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/meshroot/meshroot/store"
)

// IssueRequest asks the service for a cluster intermediate.
type IssueRequest struct {
	Cluster string
	// CSR is the parsed request; when nil, CSRData (PEM or DER, as
	// received) is parsed by the service so that a malformed CSR is
	// refused and audited like any other refusal.
	CSR     *x509.CertificateRequest
	CSRData []byte
	TTL     time.Duration
	// TrustDomainConstraint asked for the URI name constraint, which every
	// intermediate signed by a local root now carries (with DNS and IP
	// constraints); with an upstream it is refused as before.
	TrustDomainConstraint bool
	// JoinToken is the id of the join token that authenticated the
	// request, "" for other credentials. The token must be spent with the
	// CSR's key (see KeyHash): the intermediate issued is recorded on it,
	// and a retry with the same token and key gets that intermediate again
	// instead of a second one.
	JoinToken string
	// Registered, when set, is Cluster's record as the caller read it a
	// moment ago (the server's authentication of the requester reads it),
	// and the service does not read it again. The issuing transaction
	// checks, as it always does, that this registration is still the
	// current one and not quarantined.
	Registered *store.Cluster
}

// Issued is a signed cluster intermediate with everything a cacerts needs
// besides the key.
type Issued struct {
	Cert *x509.Certificate
	// Chain is the intermediate, then every CA above it, root last.
	Chain []*x509.Certificate
	// Bundle holds every trusted root and the bundle sequence.
	Bundle TrustBundle
	RootID string
}

// CACerts combines the issued certificates with the intermediate's key.
func (i Issued) CACerts(key crypto.Signer) *CACerts {
	return &CACerts{Cert: i.Cert, Key: key, Chain: i.Chain, Roots: i.Bundle.Roots}
}

// IssueIntermediate signs an intermediate for a registered cluster with the
// active root, records it (superseding the cluster's previous one) and
// audits, all or nothing. Refusals are audited with their reason.
func (s *Service) IssueIntermediate(ctx context.Context, req IssueRequest) (Issued, error) {
	actor := ActorFrom(ctx)
	out, err := s.issue(ctx, actor, req)
	if err != nil {
		return Issued{}, s.auditRefusal(ctx, actor, "intermediate.issue", req.Cluster, err)
	}
	return out, nil
}

func (s *Service) issue(ctx context.Context, actor Actor, req IssueRequest) (Issued, error) {
	cl, err := s.requested(ctx, req)
	if err != nil {
		return Issued{}, err
	}
	if err := refuseQuarantined(ctx, s.store, cl.Name); err != nil {
		return Issued{}, err // checked again in the transaction
	}
	if req.CSR == nil {
		// SignIntermediate checks the signature; parse only here.
		if req.CSR, err = parseCSR(req.CSRData); err != nil {
			return Issued{}, refuse(err)
		}
	}
	var joinKey []byte
	if req.JoinToken != "" {
		serial, err := s.joinTokenIssued(ctx, req)
		if err != nil {
			return Issued{}, err
		}
		if serial != "" {
			return s.reissueJoined(ctx, actor, req, serial)
		}
		joinKey = KeyHash(req.CSR)
	}
	permitIPs, err := ParsePermittedIPs(cl.PermitIPs)
	if err != nil {
		return Issued{}, fmt.Errorf("cluster %s: stored IP ranges: %w", cl.Name, err)
	}
	ireq := IntermediateRequest{Cluster: cl.Name, TrustDomain: cl.TrustDomain, CSR: req.CSR, TTL: req.TTL,
		TrustDomainConstraint: req.TrustDomainConstraint, PermitDNS: cl.PermitDNS, PermitIPs: permitIPs}
	root, err := s.ActiveRoot(ctx)
	if err != nil {
		return Issued{}, err
	}
	// The stored policy, read on every issuance: whichever process set it
	// last (server, data-dir CLI), every path issues under it.
	pol, polRaw, err := s.policyRead(ctx)
	if err != nil {
		return Issued{}, err
	}
	var cert *x509.Certificate
	var above []*x509.Certificate // every CA above the intermediate
	if isUpstream(root) {
		chain, err := s.signUpstream(ctx, root, ireq, pol)
		if err != nil {
			return Issued{}, err
		}
		cert, above = chain[0], chain[1:]
	} else {
		auth, err := s.Authority(ctx, root)
		if err != nil {
			return Issued{}, err
		}
		if cert, err = auth.withPolicy(pol).SignIntermediate(ireq); err != nil {
			return Issued{}, err
		}
		above = auth.Chain()
	}
	bundle, err := s.TrustBundle(ctx)
	if err != nil {
		return Issued{}, err
	}
	rec := store.Intermediate{
		Serial: SerialHex(cert.SerialNumber), Cluster: cl.Name, RootID: root.ID,
		NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, Status: store.IntermediateActive,
		CertPEM: EncodeCerts([]*x509.Certificate{cert}), CreatedAt: s.now().UTC(),
	}
	err = s.store.Update(ctx, func(tx store.Tx) error {
		// The root may have changed state since it was read (rotation).
		if r, err := tx.GetRoot(ctx, root.ID); err != nil {
			return err
		} else if r.State != store.RootActive {
			return refusef("root %s stopped being active during issuance: retry", root.ID)
		}
		// The cluster may have been removed (and its name registered
		// again) since it was read: the intermediate belongs to the
		// registration it was requested for, or to none.
		cur, err := tx.GetCluster(ctx, cl.Name)
		if errors.Is(err, store.ErrNotFound) {
			return refusef("cluster %s was removed during issuance", cl.Name)
		} else if err != nil {
			return err
		} else if !cur.CreatedAt.Equal(cl.CreatedAt) {
			return refusef("cluster %s was removed and registered again during issuance: retry", cl.Name)
		}
		// The policy may have been changed since it was read: an
		// intermediate signed under the one it replaced is not recorded.
		if raw, err := tx.Meta(ctx, MetaPolicy); err != nil {
			return err
		} else if raw != polRaw {
			return refusef("the intermediate policy was changed during issuance: retry")
		}
		if err := refuseQuarantined(ctx, tx, cl.Name); err != nil {
			return err
		}
		if _, err := tx.SupersedeIntermediates(ctx, cl.Name, rec.CreatedAt); err != nil {
			return err
		}
		// The status as it is now, not as it was read: a gate set or a
		// report recorded meanwhile stays.
		status := cur.Status
		status.LastContact, status.IntermediateSerial = rec.CreatedAt, rec.Serial
		if err := tx.UpdateClusterStatus(ctx, cl.Name, status); err != nil {
			return err
		}
		if err := tx.CreateIntermediate(ctx, rec); err != nil {
			return err
		}
		if joinKey != nil {
			// Conditional: of concurrent requests with the token and its
			// key, one records; the others retry and get its answer.
			err := tx.RecordJoinTokenIssue(ctx, req.JoinToken, joinKey, rec.Serial)
			if errors.Is(err, store.ErrConflict) {
				return errJoinRaced
			}
			if err != nil {
				return err
			}
		}
		return s.audit(ctx, tx, actor, "intermediate.issue", cl.Name, "ok", map[string]any{
			"serial": rec.Serial, "root_id": root.ID, "not_after": cert.NotAfter, "bundle_sequence": bundle.Sequence,
			"trust_domain_constraint": !isUpstream(root),
		})
	})
	if errors.Is(err, errJoinRaced) {
		// A concurrent request with the token and this key was issued
		// first: answer with its intermediate; ours was never recorded.
		serial, jerr := s.joinTokenIssued(ctx, req)
		if jerr != nil {
			return Issued{}, jerr
		}
		if serial == "" {
			return Issued{}, fmt.Errorf("join token %s: recording the issuance conflicted but no serial is recorded", req.JoinToken)
		}
		return s.reissueJoined(ctx, actor, req, serial)
	}
	if err != nil {
		return Issued{}, err
	}
	return Issued{Cert: cert, Chain: append([]*x509.Certificate{cert}, above...), Bundle: bundle, RootID: root.ID}, nil
}

// requested returns the record of the cluster req is for: req.Registered
// when the caller read it, else the store's.
func (s *Service) requested(ctx context.Context, req IssueRequest) (store.Cluster, error) {
	if req.Registered == nil {
		return s.cluster(ctx, req.Cluster)
	}
	if err := ValidateClusterName(req.Cluster); err != nil {
		return store.Cluster{}, refuse(err)
	}
	if req.Registered.Name != req.Cluster {
		return store.Cluster{}, fmt.Errorf("internal error: issuance for cluster %q was handed the record of cluster %q", req.Cluster, req.Registered.Name)
	}
	return *req.Registered, nil
}

// ListIntermediates lists issued intermediates of a cluster ("" for all).
func (s *Service) ListIntermediates(ctx context.Context, cluster string) ([]store.Intermediate, error) {
	return s.store.ListIntermediates(ctx, cluster)
}

// Annotations recorded on a cacerts Secret.
const (
	AnnotationSerial         = "meshroot.io/serial"
	AnnotationNotAfter       = "meshroot.io/not-after"
	AnnotationRootID         = "meshroot.io/root-id"
	AnnotationBundleSequence = "meshroot.io/bundle-sequence"
)

// Annotations returns the annotations that describe the issued
// intermediate on its cacerts Secret.
func (i Issued) Annotations() map[string]string {
	return map[string]string{
		AnnotationSerial:         SerialHex(i.Cert.SerialNumber),
		AnnotationNotAfter:       i.Cert.NotAfter.UTC().Format(time.RFC3339),
		AnnotationRootID:         i.RootID,
		AnnotationBundleSequence: strconv.FormatUint(i.Bundle.Sequence, 10),
	}
}

// RevokeIntermediate marks an intermediate revoked: it can no longer be
// used to renew, and its root's CRL lists it (reason: ReasonCode(reason)).
func (s *Service) RevokeIntermediate(ctx context.Context, serial, reason string) (store.Intermediate, error) {
	actor := ActorFrom(ctx)
	in, err := s.store.GetIntermediate(ctx, serial)
	if errors.Is(err, store.ErrNotFound) {
		err = refusef("no intermediate with serial %s: see `meshroot intermediate list`", serial)
	}
	if err != nil {
		return store.Intermediate{}, s.auditRefusal(ctx, actor, "intermediate.revoke", serial, err)
	}
	if in.Status == store.IntermediateRevoked {
		return in, nil
	}
	err = s.store.Update(ctx, func(tx store.Tx) error {
		// Revoked meanwhile (a quarantine, another revoke): its first
		// reason stays, as it would have had this call come second.
		if cur, err := tx.GetIntermediate(ctx, serial); err != nil {
			return err
		} else if cur.Status == store.IntermediateRevoked {
			return nil
		}
		if err := tx.UpdateIntermediateStatus(ctx, serial, store.IntermediateRevoked); err != nil {
			return err
		}
		if err := tx.RecordRevocation(ctx, store.Revocation{Serial: serial, Reason: ReasonCode(reason), RevokedAt: s.now().UTC()}); err != nil {
			return err
		}
		return s.audit(ctx, tx, actor, "intermediate.revoke", serial, "ok", map[string]any{"cluster": in.Cluster, "reason": reason})
	})
	in.Status = store.IntermediateRevoked
	return in, err
}
