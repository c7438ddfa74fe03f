// Package agent is the cluster side of meshroot: it generates the
// intermediate key inside the cluster, asks the server to sign it, writes
// Istio's cacerts Secret in one atomic create or update, renews before
// expiry, follows trust bundle changes, and rolls istiod when it must.
package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/kubeclient"
	"github.com/meshroot/meshroot/keys"
)

// Config configures an agent.
type Config struct {
	// Server is the meshroot server's Issuer address, host:port: one
	// replica, or a DNS name that resolves to every replica.
	Server string
	// Servers are more Issuer addresses of the same service (its
	// replicas), used besides Server: calls go to the replicas that
	// answer, and a broken watch resumes on another one.
	Servers []string
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
	Kube kubeclient.Interface
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
	// IstiodStaleAfter is how long istiod may take to serve a new cacerts
	// before the agent reports it stale (DefaultIstiodStaleAfter when 0).
	IstiodStaleAfter time.Duration
	// Probe, when its Addr is set, confirms the intermediate istiod signs
	// with by a probe CSR (probe.go).
	Probe IstiodProbe
	// Adopt lets the agent replace a cacerts Secret it did not create.
	Adopt bool
	// MeshConfig, when set, names the ConfigMap (in Secret.Namespace) whose
	// mesh config gets a caCertificates entry per federated trust domain.
	MeshConfig string
	// RenewFraction of the lifetime after which to renew (default 2/3).
	RenewFraction float64
	// MaxBackoff caps the wait between failed attempts (default 5m).
	MaxBackoff time.Duration
	// ReturnMemory is for a process that runs this one agent (the agent
	// commands): after a reconcile, once the process allocated 1 MiB or
	// more since it last did, the agent collects and returns the freed
	// heap to the OS, so that it idles at its live data rather than at
	// its last reconcile's peak (memory.go). Leave it off where many
	// agents share a process: each would force a collection of all.
	ReturnMemory bool
	Metrics      *Metrics // nil: no metrics
	Log          *slog.Logger
	Now          func() time.Time
}

// Agent keeps one cluster's cacerts Secret current.
type Agent struct {
	cfg     Config
	servers []string // Server and Servers, parsed
	client  *client
	creds   *credentialSource
	log     *slog.Logger

	mu       sync.Mutex
	bundle   *meshrootv1.TrustBundle // latest from WatchTrustBundle
	serverCA []*x509.Certificate

	istiodConf confirmState // what istiod serves (confirm.go)
	crls       crlCache     // parsed CRLs of the fleet (crlcache.go)
	certs      certCache    // parsed intermediates of the fleet (certcache.go)
	roots      rootMemo     // the bundle's roots parsed last (rootmemo.go)
	keyPEM     keyPEMMemo   // the key as the last write encoded it (keypem.go)
	secret     parsedSecret // the cacerts files parsed last (secretmemo.go)
	known      knownSecret  // the Secret as the last reconcile left it (knownsecret.go)
	crlNumbers crlNumbers   // numbers of the CRLs it signs for its intermediate (crl.go)
	certConn   certConn     // the connection with the intermediate (certconn.go)
	memory     memoryReturn // Config.ReturnMemory (memory.go)
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
		creds:  &credentialSource{joinToken: cfg.JoinToken, tokenFile: cfg.TokenFile},
		memory: newMemoryReturn(cfg.ReturnMemory),
	}
	if a.servers, err = ParseServers(append([]string{cfg.Server}, cfg.Servers...)); err != nil {
		return nil, err
	}
	if a.client, err = dial(a.servers, a.serverRoots, nil); err != nil {
		return nil, err
	}
	return a, nil
}

// Close releases the connections to the server.
func (a *Agent) Close() error {
	a.certConn.close()
	return a.client.close()
}

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
// jitter. While the server is down nothing in the cluster changes. When
// ctx ends mid-reconcile, that reconcile finishes first (ShutdownGrace).
func (a *Agent) Run(ctx context.Context) error {
	changed := make(chan struct{}, 1)
	go a.watch(ctx, changed)
	go a.pollBundle(ctx, changed) // poll.go: the refresh hint, should a push not arrive
	b := a.newBackoff()
	// A reconcile that a bundle change or a recheck (istiod's
	// confirmation, a report to retry) wakes starts from the Secret as
	// the last one left it; the first, a renewal, a retry after a failure
	// and one at least every StatusReportInterval read it
	// (knownsecret.go).
	fromKnown := false
	for ctx.Err() == nil {
		// A reconcile under way when ctx ends finishes (within
		// ShutdownGrace): an intermediate the server issued reaches the
		// Secret.
		rctx, done := graceful(ctx, ShutdownGrace)
		next, recheck, err := a.reconcile(rctx, fromKnown)
		done()
		fromKnown = false
		a.memory.afterReconcile()
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
			fromKnown = recheck
		case <-changed:
			fromKnown = true
		}
	}
	return nil
}
