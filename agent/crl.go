package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
)

// CRLFile is where Istio's plugged-in CA reads the CRLs it distributes to
// the proxies (PILOT_ENABLE_CA_CRL).
const CRLFile = "ca-crl.pem"

// AnnotationCRLWritten marks a cacerts Secret the agent once wrote
// ca-crl.pem into (RFC 3339 time of the first write): istiod may have
// published it, and it never retracts a published CRL, so from then on
// the file is kept and kept current (PlanPublishedCRLFile), even if the
// key was lost from the Secret.
const AnnotationCRLWritten = "meshroot.io/crl-written"

// CRLCAs are the CAs that need a current CRL before ca-crl.pem is
// written: the bundle's roots, every CA of the cluster's own chain (its
// intermediate included) and the fleet's current cluster intermediates.
// The agent's own plan (planCRL) takes the same CAs, the fleet's
// intermediates as its cache keeps them.
func CRLCAs(cc *ca.CACerts, roots []*x509.Certificate, set ca.CRLSet) []*x509.Certificate {
	cas := append(append([]*x509.Certificate{}, roots...), set.Intermediates...)
	if cc != nil {
		cas = append(cas, cc.Chain...)
	}
	return cas
}

// MaxSecretBytes is Kubernetes' limit on a Secret's data (the sum of its
// values): a bigger write is refused by the API server.
const MaxSecretBytes = 1 << 20

// CheckCRLFits refuses a ca-crl.pem file that would push the Secret with
// data (its current ca-crl.pem replaced) over MaxSecretBytes.
func CheckCRLFits(data map[string][]byte, file []byte) error {
	total := len(file)
	for k, v := range data {
		if k != CRLFile {
			total += len(v)
		}
	}
	if total > MaxSecretBytes {
		return fmt.Errorf("with a %d-byte %s the cacerts Secret would hold %d bytes, over Kubernetes' limit of %d", len(file), CRLFile, total, MaxSecretBytes)
	}
	return nil
}

// crlPublished reports whether cur holds ca-crl.pem, or once did.
func crlPublished(cur *Current) bool {
	if cur == nil || cur.Secret == nil {
		return false
	}
	_, had := cur.Secret.Data[CRLFile]
	return had || cur.Secret.Annotations[AnnotationCRLWritten] != ""
}

// plannedCRL is a ca-crl.pem plan a write already carried.
type plannedCRL struct {
	plan      CRLPlan
	published bool
}

// planCRL is the ca-crl.pem for cacerts cc (what the Secret read as cur
// holds, or is about to) and the bundle's CRL set: the rule before the
// first write (PlanCRLFile) or after it (PlanPublishedCRLFile). The
// cluster's own intermediate gets a CRL signed here when the set and the
// Secret hold no current one, so a new intermediate is covered in the
// same write. ok is false when the bundle carries no CRL set (a server
// without CRLs): then the Secret's file is kept as it is. A file that
// would push the Secret over Kubernetes' size limit is not planned: the
// Secret's file stays (nil before the first), with an error logged.
func (a *Agent) planCRL(cur *Current, cc *ca.CACerts, bundle *meshrootv1.TrustBundle, now time.Time) (plan CRLPlan, published, ok bool, err error) {
	published = crlPublished(cur)
	var held []byte
	var data map[string][]byte
	if cur != nil && cur.Secret != nil {
		held, data = cur.Secret.Data[CRLFile], cur.Secret.Data
	}
	if bundle == nil || bundle.GetCrls() == nil {
		return CRLPlan{PEM: held}, published, false, nil
	}
	inters, err := a.certs.intermediates(bundle.GetCrls())
	if err != nil {
		return CRLPlan{PEM: held}, published, false, fmt.Errorf("CRL set from server: %w", err)
	}
	roots, err := a.roots.parse(bundle.GetRoots())
	if err != nil {
		return CRLPlan{PEM: held}, published, false, fmt.Errorf("trust bundle from server: %w", err)
	}
	crls := a.crls.setEntries(bundle.GetCrls())
	if own, err := ownCRL(&a.crls, &a.crlNumbers, cc, now, crls, a.crls.fileEntries(held)); err != nil {
		a.log.Warn("cannot sign the cluster's CRL", "error", err)
	} else if own != nil {
		if e, err := a.crls.parseEntry(own); err == nil {
			crls = append(crls[:len(crls):len(crls)], e) // a copy: crls is the cache's
		}
	}
	cas := append(crlCAs(roots), inters...)
	if cc != nil {
		cas = append(cas, crlCAs(cc.Chain)...)
	}
	if published {
		plan = planPublishedCRLFile(&a.crls, cas, crls, held, now)
	} else {
		plan = planCRLFile(&a.crls, cas, crls, now)
	}
	if plan.PEM != nil {
		if err := CheckCRLFits(data, plan.PEM); err != nil {
			a.cfg.Metrics.failed(ErrKindCRLTooLarge)
			a.log.Error("not writing this "+CRLFile+": "+err.Error()+
				"; fewer revoked unexpired intermediates per root (shorter intermediate lifetimes) or fewer roots in the bundle bring it under (docs/quarantine.md)",
				"kept", len(held))
			plan.PEM = held
		}
	}
	return plan, published, true, nil
}

// newIntermediateGrace is how long after it was issued an intermediate
// without a CRL is expected (its agent sends the CRL with its first
// report, seconds later): until then the CAs missing from ca-crl.pem are
// logged at info, not as an error or a warning. A cluster that joins
// makes every other cluster's agent see its intermediate before its CRL:
// the 1,000-agent bench logged 65,000 errors while its fleet grew. The
// metrics (meshroot_agent_crl_missing_cas) count them either way.
const newIntermediateGrace = time.Minute

// noteCRLPlan exposes plan as metrics and logs the CAs it misses.
func (a *Agent) noteCRLPlan(plan CRLPlan, published bool, serverMissing []string, now time.Time) {
	a.cfg.Metrics.crlState(len(plan.Missing), published && plan.PEM != nil)
	if len(plan.Missing) == 0 {
		return
	}
	attrs := []any{"missing", strings.Join(plan.Missing, "; "), "server_missing", strings.Join(serverMissing, "; ")}
	const waiting = ": waiting for the CRLs of newly issued intermediates (their agents send them with their first report)"
	switch fresh := allNew(plan.missingCAs, now); {
	case published && fresh:
		a.log.Info(CRLFile+" is incomplete"+waiting, attrs...)
	case published:
		a.log.Error(CRLFile+" is incomplete: istiod already publishes CRLs and never retracts them, so proxies refuse chains through these CAs until each has a current CRL", attrs...)
	case fresh:
		a.log.Info("not writing "+CRLFile+waiting, attrs...)
	default:
		a.log.Warn("not writing "+CRLFile+": a CA of the fleet has no current CRL, and Envoy would refuse its valid chains", attrs...)
	}
}

// allNew reports whether every CA in cas was issued within
// newIntermediateGrace of now (NotBefore is set back by
// ca.DefaultBackdate) and is not a root.
func allNew(cas []*crlCA, now time.Time) bool {
	if len(cas) == 0 {
		return false
	}
	for _, c := range cas {
		if bytes.Equal(c.rawSubject, c.rawIssuer) || c.notBefore.Before(now.Add(-ca.DefaultBackdate-newIntermediateGrace)) {
			return false
		}
	}
	return true
}

// reconcileCRL keeps ca-crl.pem in the cacerts Secret current: before the
// first write only a complete set is written; once written it is never
// taken out, and holds the freshest CRL of every CA that has one (see
// crl_plan.go). A CA without a current CRL is logged and counted in
// meshroot_agent_crl_missing_cas. It works on the Secret as cur holds it
// and returns it as it now is, and whether it changed it. planned, when
// not nil, is the plan the cacerts write of this reconcile carried: it is
// not made again.
func (a *Agent) reconcileCRL(ctx context.Context, cur *Current, bundle *meshrootv1.TrustBundle, planned *plannedCRL, now time.Time) (*Current, bool, error) {
	if bundle == nil || bundle.GetCrls() == nil {
		return cur, false, nil // a server without CRLs: leave the Secret as it is
	}
	if planned != nil {
		a.noteCRLPlan(planned.plan, planned.published, bundle.GetCrls().GetMissing(), now)
		return cur, false, nil
	}
	if cur.Secret == nil || cur.CACerts == nil || !cur.ManagedByMeshroot() {
		return cur, false, nil
	}
	plan, published, _, err := a.planCRL(cur, cur.CACerts, bundle, now)
	if err != nil {
		return cur, false, err
	}
	a.noteCRLPlan(plan, published, bundle.GetCrls().GetMissing(), now)
	have, had := cur.Secret.Data[CRLFile]
	if plan.PEM == nil || (had && bytes.Equal(have, plan.PEM)) {
		return cur, false, nil // never taken out: nothing to write, or nothing new
	}
	s := cur.Secret.DeepCopy()
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	s.Data[CRLFile] = plan.PEM
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	if s.Annotations[AnnotationCRLWritten] == "" {
		s.Annotations[AnnotationCRLWritten] = now.UTC().Format(time.RFC3339)
	}
	written, err := a.cfg.Kube.Secrets(s.Namespace).UpdateMeta(ctx, s, metav1.UpdateOptions{})
	if err != nil {
		a.cfg.Metrics.failed(ErrKindSecretWrite)
		return cur, false, fmt.Errorf("update %s in Secret %s/%s: %w", CRLFile, s.Namespace, s.Name, err)
	}
	a.cfg.Metrics.crlState(len(plan.Missing), true)
	a.log.Info(CRLFile+" updated", "bytes", len(plan.PEM), "next_update", plan.MinNextUpdate, "missing", len(plan.Missing))
	return &Current{Secret: written, CACerts: cur.CACerts, Format: cur.Format, Problem: cur.Problem}, true, nil
}

// AppliedRootCRLs returns, per root of roots (by ID), the highest number of
// its CRLs in a ca-crl.pem file: what the cluster enforces of each root's
// revocations. It is empty (not nil) without a file.
func AppliedRootCRLs(file []byte, roots []*x509.Certificate) map[string]uint64 {
	return appliedRootCRLs(nil, file, roots)
}

func appliedRootCRLs(cache *crlCache, file []byte, roots []*x509.Certificate) map[string]uint64 {
	out := map[string]uint64{}
	cas := crlCAs(roots)
	note := func(e *crlEntry, i int) {
		if n, ok := e.rl.Number.uint64(); ok && e.issuer == cas[i].subject && cache.checkEntry(e, cas[i]) == nil {
			id := ca.RootID(roots[i])
			out[id] = max(out[id], n)
		}
	}
	entries := cache.fileEntries(file)
	// The file the agent planned last: its CRLs of each root's name are
	// known without reading the ~1,000 others (crl_memo.go).
	if cache.withPlanned(entries, func(named func([32]byte) []*crlEntry) {
		for i := range roots {
			for _, e := range named(cas[i].subject) {
				note(e, i)
			}
		}
	}) {
		return out
	}
	for _, e := range entries {
		for i := range roots {
			note(e, i)
		}
	}
	return out
}

// OwnCRL returns a new CRL signed with the cluster intermediate's key
// (cc.Key) when crls (the fleet's set) hold no CRL of it with at least
// ca.CRLRefreshBefore (or half the intermediate's remaining life) left,
// else nil. Its number is the time in nanoseconds, so it increases
// across restarts; its nextUpdate stops at the intermediate's expiry.
func OwnCRL(cc *ca.CACerts, crls [][]byte, now time.Time) ([]byte, error) {
	var c *crlCache
	return ownCRL(nil, nil, cc, now, c.entries(crls))
}

// crlNumbers hands out the numbers of the CRLs an agent signs for its
// intermediate: the time in nanoseconds, or one above the last number
// when that is not higher. One reconcile may sign two (one for its status
// report while ca-crl.pem is not written yet, then one for the file) with
// the same now; the server keeps a cluster's CRL only when its number is
// above the last one kept, so the second must be higher, not equal.
type crlNumbers struct {
	mu   sync.Mutex
	last int64
}

// next is the number of the next CRL signed at now (nil: the time).
func (n *crlNumbers) next(now time.Time) *big.Int {
	if n == nil {
		return big.NewInt(now.UnixNano())
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.last = max(now.UnixNano(), n.last+1)
	return big.NewInt(n.last)
}

// ownCRL is OwnCRL for the CRLs in lists (the fleet's set, the file's),
// entries of cache, numbered by nums.
func ownCRL(cache *crlCache, nums *crlNumbers, cc *ca.CACerts, now time.Time, lists ...[]*crlEntry) ([]byte, error) {
	if cc == nil || cc.Key == nil {
		return nil, nil
	}
	if ownCurrent(cache, cc, now, lists...) != nil {
		return nil, nil
	}
	cert := cc.Cert
	next := now.Add(ca.CRLValidity)
	if cert.NotAfter.Before(next) {
		next = cert.NotAfter
	}
	return x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: nums.next(now), ThisUpdate: now.Add(-time.Minute), NextUpdate: next,
	}, cert, cc.Key)
}

// ownCurrent returns the first CRL in lists that cc's intermediate signed
// and that has at least ca.CRLRefreshBefore (or half the intermediate's
// remaining life) left, or nil. CRLs naming another issuer are passed
// over by their issuer ID, without a signature check.
func ownCurrent(cache *crlCache, cc *ca.CACerts, now time.Time, lists ...[]*crlEntry) *crlEntry {
	if cc == nil || cc.Cert == nil {
		return nil
	}
	cert := cc.Cert
	issuer := crlCAOf(cert, true)
	fresh := now.Add(min(ca.CRLRefreshBefore, cert.NotAfter.Sub(now)/2))
	for _, es := range lists {
		for _, e := range es {
			if e.issuer == issuer.subject && e.rl.NextUpdate.After(fresh) && cache.checkEntry(e, issuer) == nil {
				return e
			}
		}
	}
	return nil
}

// bundleLacksOwnCRL reports whether the latest bundle's CRL set (the
// server's) holds no current CRL of cc's intermediate (the cluster's).
func (a *Agent) bundleLacksOwnCRL(cc *ca.CACerts, now time.Time) bool {
	b := a.latestBundle()
	if b == nil || b.GetCrls() == nil || cc == nil {
		return false
	}
	return ownCurrent(&a.crls, cc, now, a.crls.setEntries(b.GetCrls())) == nil
}

// crlForReport is the cluster's own CRL to send with its status, if the
// server's set lacks a current one: the one already in ca-crl.pem when
// it is current (signed into the write that brought a new intermediate),
// so that the server's copy does not change the file again, else a new
// one.
func (a *Agent) crlForReport(cur *Current, now time.Time) []byte {
	if !a.bundleLacksOwnCRL(cur.CACerts, now) {
		return nil
	}
	b := a.latestBundle()
	if cur.Secret != nil {
		if e := ownCurrent(&a.crls, cur.CACerts, now, a.crls.fileEntries(cur.Secret.Data[CRLFile])); e != nil {
			return e.rl.Raw
		}
	}
	der, err := ownCRL(&a.crls, &a.crlNumbers, cur.CACerts, now, a.crls.setEntries(b.GetCrls()))
	if err != nil {
		a.log.Warn("cannot sign the cluster's CRL", "error", err)
	}
	return der
}

// crlState records how many CAs lack a current CRL and whether cacerts
// holds a ca-crl.pem istiod may have published.
func (m *Metrics) crlState(missing int, published bool) {
	if m != nil {
		m.crl.WithLabelValues().Set(float64(missing))
		p := 0.0
		if published {
			p = 1
		}
		m.crlPublished.WithLabelValues().Set(p)
	}
}
