package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/meshroot/meshroot/store"
)

// CRL timing: a root CRL is valid for CRLValidity and re-signed once less
// than CRLRefreshBefore of it is left, so that every consumer holding a
// CRL fetched at any time in between still has a current one for at least
// CRLRefreshBefore. Agents treat a CRL that is not CRLCurrent as missing.
var (
	CRLValidity      = 7 * 24 * time.Hour
	CRLRefreshBefore = 5 * 24 * time.Hour
	CRLMinRemaining  = time.Hour
)

// CRLCurrent says whether rl, signed by issuer, is current at now: its
// nextUpdate is more than CRLMinRemaining ahead, or it covers the rest of
// the issuer's life (a cluster intermediate with less than CRLMinRemaining
// left, or a short-lived one, can sign no CRL that runs further than its
// own expiry, and needs none: chains through it end there too).
func CRLCurrent(rl *x509.RevocationList, issuer *x509.Certificate, now time.Time) bool {
	if issuer == nil {
		return CRLCurrentUntil(rl.NextUpdate, time.Time{}, now)
	}
	return CRLCurrentUntil(rl.NextUpdate, issuer.NotAfter, now)
}

// CRLCurrentUntil is CRLCurrent for a CRL known by its nextUpdate and an
// issuer known by its expiry (notAfter; zero when unknown).
func CRLCurrentUntil(nextUpdate, notAfter, now time.Time) bool {
	if !nextUpdate.After(now) {
		return false
	}
	return nextUpdate.After(now.Add(CRLMinRemaining)) || (!notAfter.IsZero() && !nextUpdate.Before(notAfter))
}

// MaxClusterCRLBytes bounds a CRL an agent sends for its intermediate.
const MaxClusterCRLBytes = 64 << 10

// RFC 5280 CRLReason codes meshroot uses.
const (
	ReasonUnspecified    = 0
	ReasonKeyCompromise  = 1
	ReasonCACompromise   = 2
	ReasonSuperseded     = 4
	ReasonCessationOfOps = 5
)

// ReasonCode maps a free-text revocation reason to its RFC 5280 code: the
// code's name (keyCompromise, cACompromise, superseded,
// cessationOfOperation, any case, dashes ignored) or a text that starts
// with it; anything else is unspecified.
func ReasonCode(reason string) int {
	r := strings.ToLower(strings.ReplaceAll(reason, "-", ""))
	for name, code := range map[string]int{"keycompromise": ReasonKeyCompromise, "cacompromise": ReasonCACompromise,
		"superseded": ReasonSuperseded, "cessationofoperation": ReasonCessationOfOps} {
		if strings.HasPrefix(r, name) {
			return code
		}
	}
	return ReasonUnspecified
}

// RootCRLIssuer and ClusterCRLIssuer name a CRL's issuer in the store.
func RootCRLIssuer(rootID string) string { return "root:" + rootID }

// ClusterCRLIssuer names the CRL of a cluster's intermediate (by serial)
// in the store.
func ClusterCRLIssuer(cluster, serial string) string { return "cluster:" + cluster + "/" + serial }

// CRLSet is the fleet's revocation lists as agents get them with the trust
// bundle: one CRL per CA that may appear in a workload chain, and the
// cluster intermediates that must each have one.
type CRLSet struct {
	// CRLs are DER encoded: each root's, then each cluster's.
	CRLs [][]byte
	// Intermediates are the fleet's current cluster intermediates (not
	// revoked): every one of them needs a current CRL in CRLs.
	Intermediates []*x509.Certificate
	// Missing names the CAs the server has no current CRL for (a root
	// under an upstream, a cluster whose agent has not sent one yet).
	Missing []string
}

// ErrUpstreamCRL refuses a CRL for a root whose key meshroot does not hold.
var ErrUpstreamCRL = errors.New("the signing authority is an upstream (Vault PKI): meshroot cannot sign its CRL; Vault publishes its own at /v1/<mount>/crl")

// RootCRL returns a current CRL of the root with id, signed by its signing
// authority's key through the key manager, re-signing it (with the next CRL
// number) when there is none, less than CRLRefreshBefore of it is left, or
// the revoked intermediates changed.
func (s *Service) RootCRL(ctx context.Context, id string) (store.CRL, error) {
	r, err := s.store.GetRoot(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.CRL{}, refusef("no root %s: see `meshroot root list`", id)
	} else if err != nil {
		return store.CRL{}, err
	}
	if !r.State.InBundle() {
		return store.CRL{}, refusef("root %s is %s: it is not in the trust bundle and has no CRL", id, r.State)
	}
	if isUpstream(r) {
		return store.CRL{}, refuse(fmt.Errorf("root %s: %w", id, ErrUpstreamCRL))
	}
	entries, unlisted, err := s.revokedUnder(ctx, id)
	if err != nil {
		return store.CRL{}, err
	}
	issuer := RootCRLIssuer(id)
	old, err := s.store.GetCRL(ctx, issuer)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return store.CRL{}, err
	}
	now := s.now()
	if err == nil && old.NextUpdate.Sub(now) > CRLRefreshBefore && sameSerials(old.DER, entries) {
		if len(unlisted) > 0 {
			// Listed before their CRL numbers were recorded (an older
			// database): the current CRL lists them.
			err = s.store.Update(ctx, func(tx store.Tx) error { return tx.MarkRevocationsListed(ctx, unlisted, old.Number) })
		}
		return old, err
	}
	if s.mayResignCRL != nil && !s.mayResignCRL() {
		return followerCRL(id, old, err, now)
	}
	auth, err := s.Authority(ctx, r)
	if err != nil {
		return store.CRL{}, err
	}
	tmpl := &x509.RevocationList{
		Number: new(big.Int).SetUint64(old.Number + 1), ThisUpdate: now.Add(-time.Minute).UTC(),
		NextUpdate: now.Add(CRLValidity).UTC(), RevokedCertificateEntries: entries,
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, auth.chain[0], auth.signer)
	if err != nil {
		return store.CRL{}, fmt.Errorf("root %s: sign CRL: %w", id, err)
	}
	c := store.CRL{Issuer: issuer, Number: old.Number + 1, DER: der, ThisUpdate: tmpl.ThisUpdate, NextUpdate: tmpl.NextUpdate}
	err = s.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.PutCRL(ctx, c); err != nil {
			return err
		}
		// The quarantine status compares agents' applied CRL numbers
		// with the first number that listed each serial.
		return tx.MarkRevocationsListed(ctx, unlisted, c.Number)
	})
	if errors.Is(err, store.ErrConflict) {
		// Another process signed this number first: theirs stands.
		return s.store.GetCRL(ctx, issuer)
	}
	return c, err
}

// revokedUnder lists the revoked, unexpired intermediates issued under
// root id as CRL entries, with their recorded reason and time, and the
// recorded serials among them that no CRL listed yet.
func (s *Service) revokedUnder(ctx context.Context, id string) ([]x509.RevocationListEntry, []string, error) {
	inters, err := s.store.ListIntermediatesByStatus(ctx, store.IntermediateRevoked)
	if err != nil {
		return nil, nil, err
	}
	recs, err := s.store.ListRevocations(ctx)
	if err != nil {
		return nil, nil, err
	}
	bySerial := map[string]store.Revocation{}
	for _, r := range recs {
		bySerial[r.Serial] = r
	}
	now := s.now()
	var out []x509.RevocationListEntry
	var unlisted []string
	for _, in := range inters {
		if in.RootID != id || in.Status != store.IntermediateRevoked || !in.NotAfter.After(now) {
			continue
		}
		sn, ok := new(big.Int).SetString(in.Serial, 16)
		if !ok {
			return nil, nil, fmt.Errorf("intermediate serial %q is not hex", in.Serial)
		}
		rec, ok := bySerial[in.Serial]
		if !ok {
			rec = store.Revocation{RevokedAt: in.CreatedAt}
		} else if rec.ListedIn == 0 {
			unlisted = append(unlisted, in.Serial)
		}
		out = append(out, x509.RevocationListEntry{SerialNumber: sn, RevocationTime: rec.RevokedAt.UTC(), ReasonCode: rec.Reason})
	}
	return out, unlisted, nil
}

// sameSerials reports whether the CRL der lists exactly the serials of
// entries.
func sameSerials(der []byte, entries []x509.RevocationListEntry) bool {
	rl, err := x509.ParseRevocationList(der)
	if err != nil || len(rl.RevokedCertificateEntries) != len(entries) {
		return false
	}
	var a, b []string
	for _, e := range rl.RevokedCertificateEntries {
		a = append(a, e.SerialNumber.Text(16))
	}
	for _, e := range entries {
		b = append(b, e.SerialNumber.Text(16))
	}
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// FleetCRLs returns the CRL set agents write into cacerts: a current CRL
// of every root in the bundle (signed or re-signed here when due), and the
// last CRL each cluster's agent sent for its intermediate. A CA without a
// current CRL is named in Missing; agents that never wrote ca-crl.pem
// then leave it out, the others keep it incomplete (agent/crl_plan.go).
func (s *Service) FleetCRLs(ctx context.Context) (CRLSet, error) {
	var set CRLSet
	roots, err := s.store.ListRoots(ctx)
	if err != nil {
		return set, err
	}
	for _, r := range roots {
		if !r.State.InBundle() {
			continue
		}
		c, err := s.RootCRL(ctx, r.ID)
		if err != nil {
			set.Missing = append(set.Missing, fmt.Sprintf("root %s: %v", short(r.ID), err))
			continue
		}
		set.CRLs = append(set.CRLs, c.DER)
	}
	// The bundle hub calls this every poll: read the active intermediates
	// only, not the superseded history.
	inters, err := s.store.ListIntermediatesByStatus(ctx, store.IntermediateActive)
	if err != nil {
		return set, err
	}
	now := s.now()
	required := map[string]bool{}
	parsed := s.fleetInters.begin()
	for _, in := range inters {
		if in.Status != store.IntermediateActive || !in.NotAfter.After(now) {
			continue
		}
		cert, err := parsed.get(in.Serial, in.CertPEM)
		if err != nil {
			return set, fmt.Errorf("intermediate %s: stored certificate: %v", in.Serial, err)
		}
		set.Intermediates = append(set.Intermediates, cert)
		required[in.Cluster+"/"+in.Serial] = true
	}
	s.fleetInters.end(parsed)
	crls, err := s.store.ListCRLs(ctx)
	if err != nil {
		return set, err
	}
	have := map[string]bool{} // clusters with a current CRL of their active intermediate
	for _, c := range crls {
		rest, ok := strings.CutPrefix(c.Issuer, "cluster:")
		name, _, _ := strings.Cut(rest, "/")
		if !ok || !c.NextUpdate.After(now) {
			continue
		}
		// The last CRL of a superseded intermediate rides along while it
		// is current: workloads certified under it may still be running.
		set.CRLs = append(set.CRLs, c.DER)
		if required[rest] {
			have[name] = true
		}
	}
	for _, in := range inters {
		if required[in.Cluster+"/"+in.Serial] && !have[in.Cluster] {
			set.Missing = append(set.Missing, fmt.Sprintf("cluster %s: no current CRL from its agent yet", in.Cluster))
			have[in.Cluster] = true
		}
	}
	return set, nil
}
