package agent

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/api/wire"
	"github.com/meshroot/meshroot/ca"
)

// Reconcile brings the Secret up to date once and returns when the
// intermediate should next be renewed.
func (a *Agent) Reconcile(ctx context.Context) (time.Time, error) {
	next, _, err := a.reconcile(ctx, false)
	return next, err
}

// reconcile is Reconcile. With fromKnown it starts from the Secret as the
// last successful reconcile left it, when there is one, instead of
// reading it (knownsecret.go); should the Secret have changed since, the
// write fails with a conflict and the reconcile starts again from a read.
// recheck reports that next is not the renewal but a recheck (of istiod's
// confirmation, or a status report to retry), which may start from the
// known Secret too.
func (a *Agent) reconcile(ctx context.Context, fromKnown bool) (next time.Time, recheck bool, err error) {
	cur, at := a.known.take(a.cfg.Now(), StatusReportInterval)
	if !fromKnown || cur == nil {
		return a.reconcileFrom(ctx, nil, time.Time{})
	}
	next, recheck, err = a.reconcileFrom(ctx, cur, at)
	if err != nil && apierrors.IsConflict(err) {
		a.log.Info("the cacerts Secret changed since the agent last wrote or read it; reading it again", "error", err)
		return a.reconcileFrom(ctx, nil, time.Time{})
	}
	return next, recheck, err
}

// reconcileFrom is one reconcile from cur, which came from the API at at,
// or from a read of the Secret when cur is nil; its results are
// reconcile's.
func (a *Agent) reconcileFrom(ctx context.Context, cur *Current, at time.Time) (next time.Time, recheck bool, err error) {
	now := a.cfg.Now()
	from := cur
	if cur == nil {
		if cur, err = readSecret(ctx, a.cfg.Kube, a.cfg.Secret, &a.secret); err != nil {
			a.cfg.Metrics.failed(ErrKindSecretRead)
			return time.Time{}, false, err
		}
	}
	a.observe(cur)
	if cur.Secret != nil && !cur.ManagedByMeshroot() && !a.cfg.Adopt {
		return time.Time{}, false, permanent(&ca.PolicyError{Err: fmt.Errorf("Secret %s/%s exists and is not managed by meshroot: delete it, or pass --adopt to replace it", a.cfg.Secret.Namespace, a.cfg.Secret.Name)})
	}
	bundle := a.latestBundle()
	if bundle == nil {
		// No watch yet (or --once): ask once; a failure here is not fatal.
		if b, err := a.client.issuer.GetTrustBundle(ctx, &meshrootv1.GetTrustBundleRequest{Cluster: a.cfg.Cluster}); err == nil {
			a.mu.Lock()
			if a.bundle == nil {
				a.bundle = b
			}
			a.mu.Unlock()
			bundle = b
		}
	}
	// Each step works on the Secret as the one before left it (as read,
	// or as its write returned it): one read per reconcile, not one per
	// step, of a Secret that holds the fleet's CRLs.
	next, cur, planned, err := a.reconcileCACerts(ctx, cur, bundle, now)
	if err != nil {
		return time.Time{}, false, err
	}
	renewAt := next
	cc := cur.CACerts
	// Federated bundles and ca-crl.pem are written, but a failure to
	// write them must not keep the report from the server: they are
	// returned after it.
	var deliverErr error
	if bundle != nil {
		deliverErr = a.deliverFederated(ctx, bundle)
	}
	// A new intermediate's CRL goes to the server at once: until it is in
	// the fleet's set, every other cluster's ca-crl.pem lacks it and
	// their proxies refuse chains through the new intermediate.
	reported := false
	if a.bundleLacksOwnCRL(cc, now) {
		reported = a.report(ctx, cur, now)
	}
	cur, changed, crlErr := a.reconcileCRL(ctx, cur, bundle, planned, now)
	// Otherwise one report, after every write: it says which CRLs the
	// cluster enforces (the server shows quarantines as enforced from
	// it), and each change of the fleet makes every agent report.
	if !reported || changed {
		reported = a.report(ctx, cur, now)
	}
	if !reported {
		// The rotation gates wait for this report: try again soon, not
		// at the next renewal.
		if retry := now.Add(5 * time.Second); retry.Before(next) {
			next = retry
		}
	}
	next = a.istiodNext(next, now)
	if deliverErr != nil {
		a.cfg.Metrics.failed(ErrKindFederated)
		return time.Time{}, false, deliverErr
	}
	if crlErr != nil {
		return time.Time{}, false, crlErr
	}
	if cur != from { // read or written now
		at = now
	}
	a.known.set(cur, at)
	return next, next.Before(renewAt), nil
}

// report tells the server what the cluster now runs with (rotation phases
// wait for it). It authenticates with the intermediate it just wrote, or a
// service-account token; a failure is logged and retried next time.
func (a *Agent) report(ctx context.Context, cur *Current, now time.Time) bool {
	if cur.CACerts == nil || cur.Secret == nil {
		return false
	}
	var err error
	req := &meshrootv1.ReportStatusRequest{
		Cluster: a.cfg.Cluster, BundleSequence: appliedSequence(cur), IntermediateSerial: ca.SerialHex(cur.CACerts.Cert.SerialNumber),
	}
	req.Crl = a.crlForReport(cur, now)
	wire.SetAppliedCRLs(req, appliedRootCRLs(&a.crls, cur.Secret.Data[CRLFile], cur.CACerts.Roots))
	wire.SetIstiod(req, a.confirmIstiod(ctx, cur, now))
	if cert := a.renewalCert(cur, now); cert != nil {
		err = a.withCert(cert, func(c meshrootv1.IssuerClient) error {
			_, rerr := c.ReportStatus(ctx, req)
			return rerr
		})
	} else if a.creds.tokenFile != "" {
		var rctx context.Context
		if rctx, _, err = a.creds.withToken(ctx); err == nil {
			_, err = a.client.issuer.ReportStatus(rctx, req)
		}
	}
	if err != nil {
		a.cfg.Metrics.failed(ErrKindReport)
		a.log.Warn("status report failed; will retry", "error", status.Convert(err).Message())
		return false
	}
	a.log.Debug("status reported", "bundle_sequence", req.BundleSequence, "serial", req.IntermediateSerial)
	a.cfg.Metrics.reported(now)
	return true
}

// reconcileCACerts brings the cacerts Secret up to date, and returns the
// Secret as it now is (cur, or what its write returned) and, when that
// write carried a ca-crl.pem planned from bundle, the plan.
func (a *Agent) reconcileCACerts(ctx context.Context, cur *Current, bundle *meshrootv1.TrustBundle, now time.Time) (time.Time, *Current, *plannedCRL, error) {
	reason := a.needsIssue(cur, bundle, now)
	var cacerts *ca.CACerts
	var annotations map[string]string
	switch {
	case reason != "":
		a.log.Info("requesting intermediate", "reason", reason)
		issued, key, err := a.issue(ctx, cur, now)
		if err != nil {
			a.cfg.Metrics.failed(ErrKindIssue)
			return time.Time{}, cur, nil, err
		}
		cacerts = issued.CACerts(key)
		annotations = issued.Annotations()
		annotations[AnnotationIssuedAt] = now.UTC().Format(time.RFC3339)
	case bundle != nil && rootsDiffer(cur.CACerts.Roots, bundle.GetRoots()) && bundle.GetSequence() > appliedSequence(cur):
		roots, err := a.roots.parse(bundle.GetRoots())
		if err != nil {
			return time.Time{}, cur, nil, fmt.Errorf("trust bundle from server: %w", err)
		}
		cc := *cur.CACerts
		cc.Roots = roots
		cacerts = &cc
		annotations = map[string]string{ca.AnnotationBundleSequence: strconv.FormatUint(bundle.GetSequence(), 10)}
		a.log.Info("trust bundle changed; updating root-cert.pem", "sequence", bundle.GetSequence(), "roots", len(roots))
	default:
		return a.renewAt(cur.CACerts.Cert, cur.Secret.Annotations), cur, nil, nil
	}
	// ca-crl.pem goes in the same update: the CRLs for the new roots and
	// chain when the server sent them with the bundle (it signs a new
	// root's CRL in the same refresh), and never dropped once written.
	crl, published, planOK, err := a.planCRL(cur, cacerts, bundle, now)
	if err != nil {
		a.log.Warn("cacerts written without a new "+CRLFile, "error", err)
	}
	var planned *plannedCRL
	if err == nil && planOK && published && crl.PEM != nil {
		// Written with this ca-crl.pem under the rule for a published
		// file: planning again from the written Secret gives it again.
		planned = &plannedCRL{plan: crl, published: published}
	}
	if crl.PEM != nil {
		if _, ok := annotations[AnnotationCRLWritten]; !ok && !crlPublished(cur) {
			annotations[AnnotationCRLWritten] = now.UTC().Format(time.RFC3339)
		}
	}
	cacerts.KeyPEM = a.keyPEM.get(cacerts.Key) // cacerts is this reconcile's own
	written, err := apply(ctx, a.cfg.Kube, cur, cacerts, annotations, ApplyOptions{
		Secret: a.cfg.Secret, Format: a.cfg.Format, Restart: a.cfg.Restart,
		IstiodDeployment: a.cfg.IstiodDeployment, Adopt: a.cfg.Adopt, Log: a.log, CRL: crl.PEM,
	}, now)
	if written == nil {
		a.cfg.Metrics.failed(ErrKindSecretWrite)
		return time.Time{}, cur, nil, err
	}
	_, _, keyFile, _, _ := secretFiles(written.Data)
	a.keyPEM.set(cacerts.Key, written.Data[keyFile])
	cur = currentOf(written, &a.secret)
	a.observe(cur)
	if err != nil { // written, but rolling istiod failed
		a.cfg.Metrics.failed(ErrKindSecretWrite)
		return time.Time{}, cur, nil, err
	}
	a.cfg.Metrics.wrote(now)
	return a.renewAt(cacerts.Cert, written.Annotations), cur, planned, nil
}

// needsIssue says why a new intermediate is needed, or "" when the current
// one is good.
func (a *Agent) needsIssue(cur *Current, bundle *meshrootv1.TrustBundle, now time.Time) string {
	switch {
	case cur.Secret == nil:
		return "no cacerts Secret"
	case cur.CACerts == nil:
		return fmt.Sprintf("cacerts Secret is unreadable: %v", cur.Problem)
	case !cur.ManagedByMeshroot():
		return "adopting a cacerts Secret meshroot did not write"
	}
	if err := cur.CACerts.Verify(now); err != nil {
		return fmt.Sprintf("cacerts fails the self-check: %v", err)
	}
	if cn := cur.CACerts.Cert.Subject.CommonName; cn != a.cfg.Cluster {
		return fmt.Sprintf("the intermediate is for cluster %q, not %q", cn, a.cfg.Cluster)
	}
	if !now.Before(a.renewAt(cur.CACerts.Cert, cur.Secret.Annotations)) {
		return "intermediate is due for renewal"
	}
	if bundle != nil {
		top := cur.CACerts.Chain[len(cur.CACerts.Chain)-1]
		// The root that signed the intermediate: the annotation when the
		// chain goes through a cross certificate to an older root.
		signedBy := cur.Secret.Annotations[ca.AnnotationRootID]
		if signedBy == "" {
			signedBy = ca.RootID(top)
		}
		if id := bundle.GetActiveRootId(); id != "" && id != signedBy {
			return "the active root changed"
		}
		if !containsDER(bundle.GetRoots(), top.Raw) {
			return "the intermediate's root left the trust bundle"
		}
	}
	return ""
}

// issue asks the server for a new intermediate. It offers the current
func appliedSequence(cur *Current) uint64 {
	if cur.Secret == nil {
		return 0
	}
	n, _ := strconv.ParseUint(cur.Secret.Annotations[ca.AnnotationBundleSequence], 10, 64)
	return n
}

func rootsDiffer(have []*x509.Certificate, want [][]byte) bool {
	if len(have) != len(want) {
		return true
	}
	for _, c := range have {
		if !containsDER(want, c.Raw) {
			return true
		}
	}
	return false
}

func containsDER(list [][]byte, der []byte) bool {
	for _, d := range list {
		if bytes.Equal(d, der) {
			return true
		}
	}
	return false
}

func parseDERs(ders [][]byte) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, 0, len(ders))
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}
