// Package agent is the cluster side of meshroot: it generates the
// intermediate key inside the cluster, asks the server to sign it, writes
// Istio's cacerts Secret in one atomic create or update, renews before
// expiry, follows trust bundle changes, and rolls istiod when it must.
package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"go.step.sm/crypto/x509util"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"k8s.io/client-go/kubernetes"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
)

// Config configures an agent.
type Config struct {
	// Server is the meshroot server's Issuer address, host:port.
	Server string
	// ServerCA verifies the server (the trust domain's roots, PEM).
	ServerCA []byte
	// Cluster is this cluster's registered name.
	Cluster string
	// JoinToken bootstraps a cluster without service-account token
	// verification; it works once.
	JoinToken string
	// TokenFile is a projected service-account token (audience meshroot),
	// re-read at every use.
	TokenFile string
	// Kube is the cluster's API.
	Kube kubernetes.Interface
	// Secret is where cacerts goes (default istio-system/cacerts).
	Secret SecretRef
	// Format is the cacerts layout (default istio).
	Format ca.Format
	// KeyType of the intermediate key (default ec-p256).
	KeyType keys.KeyType
	// TTL requested for the intermediate (0: the server's default).
	TTL time.Duration
	// Restart says when to roll istiod; IstiodDeployment names it (istiod).
	Restart          RestartMode
	IstiodDeployment string
	// Adopt lets the agent replace a cacerts Secret it did not create.
	Adopt bool
	// MeshConfig, when set, names the ConfigMap (in Secret.Namespace) whose
	// mesh config gets a caCertificates entry per federated trust domain.
	MeshConfig string
	// RenewFraction of the lifetime after which to renew (default 2/3).
	RenewFraction float64
	// MaxBackoff caps the wait between failed attempts (default 5m).
	MaxBackoff time.Duration
	Metrics    *Metrics // nil: no metrics
	Log        *slog.Logger
	Now        func() time.Time
}

// Agent keeps one cluster's cacerts Secret current.
type Agent struct {
	cfg    Config
	client *client
	creds  *credentialSource
	log    *slog.Logger

	mu       sync.Mutex
	bundle   *meshrootv1.TrustBundle // latest from WatchTrustBundle
	serverCA []*x509.Certificate
}

// New checks cfg and connects (lazily) to the server.
func New(cfg Config) (*Agent, error) {
	if err := ca.ValidateClusterName(cfg.Cluster); err != nil {
		return nil, err
	}
	if cfg.Kube == nil {
		return nil, errors.New("agent: no Kubernetes client")
	}
	serverCA, err := ca.ParseCerts(cfg.ServerCA)
	if err != nil {
		return nil, fmt.Errorf("--server-ca: %w", err)
	}
	if cfg.JoinToken == "" && cfg.TokenFile == "" {
		return nil, errors.New("agent: no credential: pass --token-file (a projected service-account token) or --join-token")
	}
	if cfg.Secret == (SecretRef{}) {
		cfg.Secret = DefaultSecret
	}
	if cfg.Format == "" {
		cfg.Format = ca.FormatIstio
	}
	if cfg.KeyType == "" {
		cfg.KeyType = keys.ECP256
	}
	if cfg.Restart == "" {
		cfg.Restart = RestartAuto
	}
	if cfg.IstiodDeployment == "" {
		cfg.IstiodDeployment = "istiod"
	}
	if cfg.RenewFraction <= 0 || cfg.RenewFraction >= 1 {
		cfg.RenewFraction = 2.0 / 3
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 5 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &Agent{
		cfg: cfg, log: cfg.Log.With("cluster", cfg.Cluster), serverCA: serverCA,
		creds: &credentialSource{joinToken: cfg.JoinToken, tokenFile: cfg.TokenFile},
	}
	if a.client, err = dial(cfg.Server, a.serverRoots, nil); err != nil {
		return nil, err
	}
	return a, nil
}

// Close releases the connection to the server.
func (a *Agent) Close() error { return a.client.close() }

// serverRoots is what verifies the server: the --server-ca roots until a
// trust bundle has arrived, then only the bundle's roots, so that a root
// revoked in an emergency stops being trusted for the server too.
func (a *Agent) serverRoots() *x509.CertPool {
	p := x509.NewCertPool()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.bundle != nil && len(a.bundle.GetRoots()) > 0 {
		for _, der := range a.bundle.GetRoots() {
			if c, err := x509.ParseCertificate(der); err == nil {
				p.AddCert(c)
			}
		}
		return p
	}
	for _, c := range a.serverCA {
		p.AddCert(c)
	}
	return p
}

// RunOnce makes sure the cluster has a valid, current cacerts Secret,
// retrying with backoff until ctx ends. It is what a bootstrap Job runs.
func (a *Agent) RunOnce(ctx context.Context) error {
	b := a.newBackoff()
	for {
		_, err := a.Reconcile(ctx)
		if err == nil {
			return nil
		}
		if isPermanent(err) {
			return err
		}
		a.log.Warn("cacerts not written; retrying", "error", err)
		if werr := b.wait(ctx); werr != nil {
			return fmt.Errorf("%w (gave up: %v)", err, werr)
		}
	}
}

// Run keeps the Secret current until ctx ends: it renews at RenewFraction
// of the lifetime, follows WatchTrustBundle, and backs off on errors with
// jitter. While the server is down nothing in the cluster changes.
func (a *Agent) Run(ctx context.Context) error {
	changed := make(chan struct{}, 1)
	go a.watch(ctx, changed)
	b := a.newBackoff()
	for {
		next, err := a.Reconcile(ctx)
		var wait time.Duration
		switch {
		case err != nil && isPermanent(err):
			return err
		case err != nil:
			wait = b.next()
			a.log.Warn("reconcile failed; retrying", "error", err, "in", wait.Round(time.Millisecond))
		default:
			b.reset()
			wait = min(time.Until(next), StatusReportInterval)
			a.log.Info("cacerts current", "renew_at", next.UTC().Format(time.RFC3339))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(max(wait, 0)):
		case <-changed:
		}
	}
}

// watch follows WatchTrustBundle, reconnecting with backoff, and signals
// changed on every new bundle.
func (a *Agent) watch(ctx context.Context, changed chan<- struct{}) {
	b := a.newBackoff()
	for ctx.Err() == nil {
		stream, err := a.client.issuer.WatchTrustBundle(ctx, &meshrootv1.WatchTrustBundleRequest{Cluster: a.cfg.Cluster})
		if err == nil {
			// The first message of every stream triggers a reconcile (and
			// so a status report): the server may have restarted without
			// hearing what this cluster applied.
			first := true
			for {
				msg, rerr := stream.Recv()
				if rerr != nil {
					err = rerr
					break
				}
				b.reset()
				a.cfg.Metrics.watching()
				a.mu.Lock()
				// Any difference counts: federated bundles and the active
				// root change without the sequence.
				newer := a.bundle == nil || !proto.Equal(msg, a.bundle)
				a.bundle = msg
				a.mu.Unlock()
				if newer || first {
					first = false
					a.log.Info("trust bundle received", "sequence", msg.GetSequence(), "roots", len(msg.GetRoots()))
					select {
					case changed <- struct{}{}:
					default:
					}
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		a.cfg.Metrics.watchLost()
		wait := b.next()
		a.log.Warn("trust bundle watch interrupted; reconnecting", "error", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// latestBundle returns the newest bundle heard over the watch, if any.
func (a *Agent) latestBundle() *meshrootv1.TrustBundle {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bundle
}

// Reconcile brings the Secret up to date once and returns when the
// intermediate should next be renewed.
func (a *Agent) Reconcile(ctx context.Context) (time.Time, error) {
	now := a.cfg.Now()
	cur, err := ReadSecret(ctx, a.cfg.Kube, a.cfg.Secret)
	if err != nil {
		a.cfg.Metrics.failed(ErrKindSecretRead)
		return time.Time{}, err
	}
	a.observe(cur)
	if cur.Secret != nil && !cur.ManagedByMeshroot() && !a.cfg.Adopt {
		return time.Time{}, permanent(&ca.PolicyError{Err: fmt.Errorf("Secret %s/%s exists and is not managed by meshroot: delete it, or pass --adopt to replace it", a.cfg.Secret.Namespace, a.cfg.Secret.Name)})
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
	next, err := a.reconcileCACerts(ctx, cur, bundle, now)
	if err != nil {
		return time.Time{}, err
	}
	// Federated bundles are delivered, but a failure to write them must
	// not keep the report from the server: it is returned after it.
	var deliverErr error
	if bundle != nil {
		deliverErr = a.deliverFederated(ctx, bundle)
	}
	if !a.report(ctx, now) {
		// The rotation gates wait for this report: try again soon, not
		// at the next renewal.
		if retry := now.Add(5 * time.Second); retry.Before(next) {
			next = retry
		}
	}
	if deliverErr != nil {
		a.cfg.Metrics.failed(ErrKindFederated)
		return time.Time{}, deliverErr
	}
	return next, nil
}

// report tells the server what the cluster now runs with (rotation phases
// wait for it). It authenticates with the intermediate it just wrote, or a
// service-account token; a failure is logged and retried next time.
func (a *Agent) report(ctx context.Context, now time.Time) bool {
	cur, err := ReadSecret(ctx, a.cfg.Kube, a.cfg.Secret)
	if err != nil || cur.CACerts == nil || cur.Secret == nil {
		return false
	}
	a.observe(cur)
	req := &meshrootv1.ReportStatusRequest{
		Cluster: a.cfg.Cluster, BundleSequence: appliedSequence(cur), IntermediateSerial: ca.SerialHex(cur.CACerts.Cert.SerialNumber),
	}
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

// reconcileCACerts brings the cacerts Secret up to date.
func (a *Agent) reconcileCACerts(ctx context.Context, cur *Current, bundle *meshrootv1.TrustBundle, now time.Time) (time.Time, error) {
	reason := a.needsIssue(cur, bundle, now)
	var cacerts *ca.CACerts
	var annotations map[string]string
	switch {
	case reason != "":
		a.log.Info("requesting intermediate", "reason", reason)
		issued, key, err := a.issue(ctx, cur, now)
		if err != nil {
			a.cfg.Metrics.failed(ErrKindIssue)
			return time.Time{}, err
		}
		cacerts = issued.CACerts(key)
		annotations = issued.Annotations()
		annotations[AnnotationIssuedAt] = now.UTC().Format(time.RFC3339)
	case bundle != nil && rootsDiffer(cur.CACerts.Roots, bundle.GetRoots()) && bundle.GetSequence() > appliedSequence(cur):
		roots, err := parseDERs(bundle.GetRoots())
		if err != nil {
			return time.Time{}, fmt.Errorf("trust bundle from server: %w", err)
		}
		cc := *cur.CACerts
		cc.Roots = roots
		cacerts = &cc
		annotations = map[string]string{ca.AnnotationBundleSequence: strconv.FormatUint(bundle.GetSequence(), 10)}
		a.log.Info("trust bundle changed; updating root-cert.pem", "sequence", bundle.GetSequence(), "roots", len(roots))
	default:
		return a.renewAt(cur.CACerts.Cert, cur.Secret.Annotations), nil
	}
	if err := Apply(ctx, a.cfg.Kube, cur, cacerts, annotations, ApplyOptions{
		Secret: a.cfg.Secret, Format: a.cfg.Format, Restart: a.cfg.Restart,
		IstiodDeployment: a.cfg.IstiodDeployment, Adopt: a.cfg.Adopt, Log: a.log,
	}, now); err != nil {
		a.cfg.Metrics.failed(ErrKindSecretWrite)
		return time.Time{}, err
	}
	a.cfg.Metrics.wrote(now)
	if annotations[AnnotationIssuedAt] == "" && cur.Secret != nil {
		annotations = cur.Secret.Annotations // a roots-only update keeps them
	}
	return a.renewAt(cacerts.Cert, annotations), nil
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
// intermediate for renewal when it has a valid one, and falls back to a
// token when the server refuses that.
func (a *Agent) issue(ctx context.Context, cur *Current, now time.Time) (ca.Issued, crypto.Signer, error) {
	key, err := a.cfg.KeyType.Generate()
	if err != nil {
		return ca.Issued{}, nil, err
	}
	csr, err := x509util.CreateCertificateRequest(a.cfg.Cluster, nil, key)
	if err != nil {
		return ca.Issued{}, nil, fmt.Errorf("create CSR: %w", err)
	}
	req := &meshrootv1.SignIntermediateRequest{Cluster: a.cfg.Cluster, Csr: csr.Raw, TtlSeconds: int64(a.cfg.TTL / time.Second)}
	var resp *meshrootv1.SignIntermediateResponse
	if renewal := a.renewalCert(cur, now); renewal != nil {
		err = a.withCert(renewal, func(c meshrootv1.IssuerClient) error {
			var cerr error
			resp, cerr = c.SignIntermediate(ctx, req)
			return cerr
		})
		if err == nil {
			return a.issued(resp, key)
		}
		if c := status.Code(err); c != codes.Unauthenticated && c != codes.PermissionDenied {
			return ca.Issued{}, nil, fmt.Errorf("sign intermediate (renewal): %w", err)
		}
		a.log.Warn("renewal with the current intermediate refused; trying a token", "error", status.Convert(err).Message())
	}
	tctx, kind, err := a.creds.withToken(ctx)
	if err != nil {
		return ca.Issued{}, nil, err
	}
	if kind == "" {
		return ca.Issued{}, nil, permanent(errors.New("no usable credential: the join token was used and there is no service-account token; create a new join token (meshroot token create) or configure --token-file"))
	}
	resp, err = a.client.issuer.SignIntermediate(tctx, req)
	if kind == "join token" && (err == nil || status.Code(err) == codes.Unauthenticated) {
		a.creds.used = true // spent by the first request that reached the server
	}
	if err != nil {
		st := status.Convert(err)
		if st.Code() == codes.Unauthenticated || st.Code() == codes.PermissionDenied || st.Code() == codes.InvalidArgument {
			return ca.Issued{}, nil, permanent(&ca.PolicyError{Err: fmt.Errorf("server refused the %s: %s", kind, st.Message())})
		}
		return ca.Issued{}, nil, fmt.Errorf("sign intermediate: %w", err)
	}
	return a.issued(resp, key)
}

func (a *Agent) issued(resp *meshrootv1.SignIntermediateResponse, key crypto.Signer) (ca.Issued, crypto.Signer, error) {
	chain, err := parseDERs(resp.GetCertChain())
	if err != nil || len(chain) == 0 {
		return ca.Issued{}, nil, fmt.Errorf("server sent a bad chain: %v", err)
	}
	roots, err := parseDERs(resp.GetTrustedRoots())
	if err != nil || len(roots) == 0 {
		return ca.Issued{}, nil, fmt.Errorf("server sent bad roots: %v", err)
	}
	return ca.Issued{
		Cert: chain[0], Chain: chain, RootID: resp.GetRootId(),
		Bundle: ca.TrustBundle{Roots: roots, Sequence: resp.GetBundleSequence()},
	}, key, nil
}

// withCert runs f over a connection that presents cert.
func (a *Agent) withCert(cert *tls.Certificate, f func(meshrootv1.IssuerClient) error) error {
	c, err := dial(a.cfg.Server, a.serverRoots, cert)
	if err != nil {
		return err
	}
	defer c.close()
	return f(c.issuer)
}

// renewalCert is the current intermediate as a TLS client certificate, when
// it is meshroot's and still valid.
func (a *Agent) renewalCert(cur *Current, now time.Time) *tls.Certificate {
	if cur.CACerts == nil || !cur.ManagedByMeshroot() || now.After(cur.CACerts.Cert.NotAfter) {
		return nil
	}
	chain := make([][]byte, 0, len(cur.CACerts.Chain))
	for _, c := range cur.CACerts.Chain {
		chain = append(chain, c.Raw)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: cur.CACerts.Key, Leaf: cur.CACerts.Cert}
}

// AnnotationIssuedAt records when the agent received the intermediate.
const AnnotationIssuedAt = "meshroot.io/issued-at"

// renewAt is when to renew cert: RenewFraction into its lifetime, moved
// earlier by up to 5% of the time to renewal so that clusters do not all
// come at once (the same for every call: it is derived from the serial).
// The lifetime starts when the agent received the certificate (annotation
// issued-at), not at NotBefore, which the server backdates for clock skew:
// counted from NotBefore, a short lifetime could put the renewal in the
// past at once and make the agent renew in a loop.
func (a *Agent) renewAt(cert *x509.Certificate, annotations map[string]string) time.Time {
	start := cert.NotBefore
	if t, err := time.Parse(time.RFC3339, annotations[AnnotationIssuedAt]); err == nil && t.After(start) && t.Before(cert.NotAfter) {
		start = t
	}
	toRenew := time.Duration(float64(cert.NotAfter.Sub(start)) * a.cfg.RenewFraction)
	h := fnv.New64a()
	h.Write(cert.SerialNumber.Bytes())
	jitter := float64(h.Sum64()%1000) / 1000
	return start.Add(toRenew - time.Duration(jitter*0.05*float64(toRenew)))
}

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

// permanentError marks failures that retrying cannot fix.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

func permanent(err error) error { return permanentError{err} }

func isPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// backoff is exponential with full jitter, from 1 s up to MaxBackoff.
type backoff struct {
	max, cur time.Duration
}

func (a *Agent) newBackoff() *backoff { return &backoff{max: a.cfg.MaxBackoff} }

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = time.Second
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	return b.cur/2 + time.Duration(rand.Int64N(int64(b.cur/2)+1))
}

func (b *backoff) reset() { b.cur = 0 }

func (b *backoff) wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(b.next()):
		return nil
	}
}
