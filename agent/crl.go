package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/api/wire"
	"github.com/meshroot/meshroot/ca"
)

// CRLFile is where Istio's plugged-in CA reads the CRLs it distributes to
// the proxies (PILOT_ENABLE_CA_CRL).
const CRLFile = "ca-crl.pem"

// CRLs for Envoy: once any CRL is configured, Envoy checks every CA of a
// presented chain and refuses chains with a CA that has no current CRL.
// So the agent writes ca-crl.pem only when every CA that may appear in a
// fleet workload chain has one: each root of the bundle, each CA in its
// own chain, each current cluster intermediate of the fleet.

// CRLPlan is what the agent would write as ca-crl.pem, or why not.
type CRLPlan struct {
	// PEM is the file's content; nil when it must not be written.
	PEM []byte
	// Missing names the CAs without a current CRL.
	Missing []string
	// MinNextUpdate is the earliest nextUpdate of the CRLs in PEM.
	MinNextUpdate time.Time
}

// PlanCRLFile picks, for each CA in cas, the current CRL with the highest
// number among crls that it signed, and returns them PEM-concatenated; a
// CA without one (nextUpdate less than ca.CRLMinRemaining ahead) is
// named in Missing and PEM is nil. CRLs of other issuers (superseded
// intermediates) ride along when current.
func PlanCRLFile(cas []*x509.Certificate, crls [][]byte, now time.Time) CRLPlan {
	return planCRLFile(cas, crls, now, nil)
}

// planCRLFile is PlanCRLFile with the signature checks answered from sigs
// when it already verified them (nil: check each).
func planCRLFile(cas []*x509.Certificate, crls [][]byte, now time.Time, sigs *crlSigCache) CRLPlan {
	type best struct {
		rl  *x509.RevocationList
		der []byte
	}
	byIssuer := map[string]best{}
	for _, der := range crls {
		rl, err := x509.ParseRevocationList(der)
		if err != nil || !rl.NextUpdate.After(now.Add(ca.CRLMinRemaining)) || rl.Number == nil {
			continue
		}
		k := string(rl.RawIssuer)
		if b, ok := byIssuer[k]; !ok || rl.Number.Cmp(b.rl.Number) > 0 {
			byIssuer[k] = best{rl, der}
		}
	}
	var p CRLPlan
	seen := map[string]bool{}
	for _, c := range cas {
		if seen[string(c.Raw)] {
			continue
		}
		seen[string(c.Raw)] = true
		b, ok := byIssuer[string(c.RawSubject)]
		if !ok || sigs.checkFrom(b.rl, c) != nil {
			p.Missing = append(p.Missing, fmt.Sprintf("%s (serial %s)", c.Subject, ca.SerialHex(c.SerialNumber)))
		}
	}
	if len(p.Missing) > 0 {
		return p
	}
	var buf bytes.Buffer
	for _, der := range crls {
		rl, err := x509.ParseRevocationList(der)
		if err != nil || !bytes.Equal(byIssuer[string(rl.RawIssuer)].der, der) {
			continue
		}
		_ = pem.Encode(&buf, &pem.Block{Type: "X509 CRL", Bytes: der})
		if p.MinNextUpdate.IsZero() || rl.NextUpdate.Before(p.MinNextUpdate) {
			p.MinNextUpdate = rl.NextUpdate
		}
	}
	p.PEM = buf.Bytes()
	return p
}

// CRLCAs are the CAs that need a current CRL before ca-crl.pem is
// written: the bundle's roots, every CA of the cluster's own chain (its
// intermediate included) and the fleet's current cluster intermediates.
func CRLCAs(cc *ca.CACerts, roots []*x509.Certificate, set ca.CRLSet) []*x509.Certificate {
	cas := append(append([]*x509.Certificate{}, roots...), set.Intermediates...)
	if cc != nil {
		cas = append(cas, cc.Chain...)
	}
	return cas
}

// reconcileCRL writes ca-crl.pem into the cacerts Secret when every CA has
// a current CRL, and otherwise takes it out (never a CRL file that would
// make Envoy refuse valid chains), logging why and exposing it as a
// metric.
func (a *Agent) reconcileCRL(ctx context.Context, bundle *meshrootv1.TrustBundle, now time.Time) error {
	if bundle == nil || bundle.GetCrls() == nil {
		return nil // a server without CRLs: leave the Secret as it is
	}
	cur, err := ReadSecret(ctx, a.cfg.Kube, a.cfg.Secret)
	if err != nil || cur.Secret == nil || !cur.ManagedByMeshroot() {
		return err
	}
	set, err := wire.CRLSetFromProto(bundle.GetCrls())
	if err != nil {
		return fmt.Errorf("CRL set from server: %w", err)
	}
	roots, err := parseDERs(bundle.GetRoots())
	if err != nil {
		return fmt.Errorf("trust bundle from server: %w", err)
	}
	plan := planCRLFile(CRLCAs(cur.CACerts, roots, set), set.CRLs, now, &a.crlSigs)
	a.cfg.Metrics.crlMissing(len(plan.Missing))
	if plan.PEM == nil {
		a.log.Warn("not writing "+CRLFile+": a CA of the fleet has no current CRL, and Envoy would refuse its valid chains",
			"missing", strings.Join(plan.Missing, "; "), "server_missing", strings.Join(set.Missing, "; "))
	}
	have, had := cur.Secret.Data[CRLFile]
	if bytes.Equal(have, plan.PEM) && had == (plan.PEM != nil) {
		return nil
	}
	s := cur.Secret.DeepCopy()
	if plan.PEM == nil {
		delete(s.Data, CRLFile)
	} else {
		if s.Data == nil {
			s.Data = map[string][]byte{}
		}
		s.Data[CRLFile] = plan.PEM
	}
	if _, err := a.cfg.Kube.Secrets(s.Namespace).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		a.cfg.Metrics.failed(ErrKindSecretWrite)
		return fmt.Errorf("update %s in Secret %s/%s: %w", CRLFile, s.Namespace, s.Name, err)
	}
	a.log.Info(CRLFile+" updated", "written", plan.PEM != nil, "bytes", len(plan.PEM), "next_update", plan.MinNextUpdate)
	return nil
}

// OwnCRL returns a new CRL signed with the cluster intermediate's key
// (cc.Key) when crls (the fleet's set) hold no CRL of it with at least
// ca.CRLRefreshBefore (or half the intermediate's remaining life) left,
// else nil. Its number is the time in nanoseconds, so it increases
// across restarts; its nextUpdate stops at the intermediate's expiry.
func OwnCRL(cc *ca.CACerts, crls [][]byte, now time.Time) ([]byte, error) {
	if cc == nil || cc.Key == nil {
		return nil, nil
	}
	cert := cc.Cert
	for _, der := range crls {
		rl, err := x509.ParseRevocationList(der)
		if err == nil && bytes.Equal(rl.RawIssuer, cert.RawSubject) && rl.CheckSignatureFrom(cert) == nil &&
			rl.NextUpdate.After(now.Add(min(ca.CRLRefreshBefore, cert.NotAfter.Sub(now)/2))) {
			return nil, nil
		}
	}
	next := now.Add(ca.CRLValidity)
	if cert.NotAfter.Before(next) {
		next = cert.NotAfter
	}
	return x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(now.UnixNano()), ThisUpdate: now.Add(-time.Minute), NextUpdate: next,
	}, cert, cc.Key)
}

// crlForReport is the cluster's own CRL to send with its status, if due.
func (a *Agent) crlForReport(cur *Current, now time.Time) []byte {
	b := a.latestBundle()
	if b == nil || b.GetCrls() == nil {
		return nil
	}
	der, err := OwnCRL(cur.CACerts, b.GetCrls().GetCrls(), now)
	if err != nil {
		a.log.Warn("cannot sign the cluster's CRL", "error", err)
	}
	return der
}

// crlMissing records how many CAs lack a current CRL.
func (m *Metrics) crlMissing(n int) {
	if m != nil {
		m.crl.WithLabelValues().Set(float64(n))
	}
}
