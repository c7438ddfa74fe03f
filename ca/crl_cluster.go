package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/meshroot/meshroot/store"
)

// MaxClusterCRLValidity bounds how far ahead a cluster CRL's nextUpdate
// may be.
const MaxClusterCRLValidity = 31 * 24 * time.Hour

// SubmitClusterCRL takes the CRL a cluster's agent signed with its current
// intermediate's key and keeps it for the fleet's CRL set. It is refused,
// and audited, when it is oversized or malformed, not signed by the
// cluster's current intermediate, has no higher CRL number than the last
// one kept, or is not current; the last good CRL stays.
func (s *Service) SubmitClusterCRL(ctx context.Context, cluster string, der []byte) error {
	actor := ActorFrom(ctx)
	c, serial, err := s.checkClusterCRL(ctx, cluster, der)
	if err == nil {
		err = s.store.Update(ctx, func(tx store.Tx) error {
			// The intermediate must still be the cluster's active one.
			if in, err := tx.GetIntermediate(ctx, serial); err != nil {
				return err
			} else if in.Status != store.IntermediateActive {
				return refusef("intermediate %s of cluster %s is %s: sign the CRL with the current one", serial, cluster, in.Status)
			}
			if err := tx.PutCRL(ctx, c); errors.Is(err, store.ErrConflict) {
				if kept, gerr := tx.GetCRL(ctx, c.Issuer); gerr == nil && bytes.Equal(kept.DER, c.DER) {
					return errCRLKept // the same CRL again (the agent reports what it wrote): nothing to do
				}
				return refusef("CRL number %d of cluster %s is not above the last one kept: use a higher number", c.Number, cluster)
			} else if err != nil {
				return err
			}
			return s.audit(ctx, tx, actor, "crl.submit", cluster, "ok", map[string]any{"serial": serial, "number": c.Number, "next_update": c.NextUpdate})
		})
	}
	if errors.Is(err, errCRLKept) {
		return nil
	}
	if err != nil {
		return s.auditRefusal(ctx, actor, "crl.submit", cluster, err)
	}
	return nil
}

// errCRLKept ends the transaction of a CRL submitted again: the store
// already keeps exactly it.
var errCRLKept = errors.New("this CRL is already kept")

// checkClusterCRL parses and checks a cluster's CRL against its active
// intermediate.
func (s *Service) checkClusterCRL(ctx context.Context, cluster string, der []byte) (store.CRL, string, error) {
	if len(der) == 0 || len(der) > MaxClusterCRLBytes {
		return store.CRL{}, "", refusef("CRL of cluster %s is %d bytes: it must be 1 to %d", cluster, len(der), MaxClusterCRLBytes)
	}
	if _, err := s.store.GetQuarantine(ctx, cluster); err == nil {
		return store.CRL{}, "", refusef("cluster %s is quarantined: its CRLs are not taken", cluster)
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		return store.CRL{}, "", refusef("CRL of cluster %s is malformed: %v", cluster, err)
	}
	inters, err := s.store.ListIntermediates(ctx, cluster)
	if err != nil {
		return store.CRL{}, "", err
	}
	var cur *x509.Certificate
	var serial string
	for _, in := range inters {
		if in.Status != store.IntermediateActive {
			continue
		}
		certs, err := ParseCerts(in.CertPEM)
		if err != nil || len(certs) == 0 {
			return store.CRL{}, "", fmt.Errorf("intermediate %s: stored certificate: %v", in.Serial, err)
		}
		cur, serial = certs[0], in.Serial
	}
	if cur == nil {
		return store.CRL{}, "", refusef("cluster %s has no active intermediate to check its CRL against", cluster)
	}
	if !bytes.Equal(rl.RawIssuer, cur.RawSubject) || rl.CheckSignatureFrom(cur) != nil {
		return store.CRL{}, "", refusef("CRL of cluster %s is not signed by its current intermediate %s", cluster, serial)
	}
	now := s.now()
	switch {
	case rl.Number == nil || rl.Number.Sign() <= 0 || !rl.Number.IsUint64():
		return store.CRL{}, "", refusef("CRL of cluster %s has no valid CRL number", cluster)
	case !CRLCurrent(rl, cur, now):
		return store.CRL{}, "", refusef("CRL of cluster %s is not current (nextUpdate %s)", cluster, rl.NextUpdate.UTC().Format(time.RFC3339))
	case rl.NextUpdate.After(now.Add(MaxClusterCRLValidity)):
		return store.CRL{}, "", refusef("CRL of cluster %s runs past %s: nextUpdate at most %s ahead", cluster, now.Add(MaxClusterCRLValidity).UTC().Format(time.RFC3339), MaxClusterCRLValidity)
	case rl.ThisUpdate.After(now.Add(5 * time.Minute)):
		return store.CRL{}, "", refusef("CRL of cluster %s has thisUpdate in the future", cluster)
	}
	return store.CRL{Issuer: ClusterCRLIssuer(cluster, serial), Number: rl.Number.Uint64(), DER: der,
		ThisUpdate: rl.ThisUpdate, NextUpdate: rl.NextUpdate}, serial, nil
}
