package agent

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/kubeclient"
)

// ApplyOptions say where and how Apply writes cacerts.
type ApplyOptions struct {
	Secret           SecretRef
	Format           ca.Format
	Restart          RestartMode
	IstiodDeployment string
	Adopt            bool
	Log              *slog.Logger
	// CRL, when not nil, is written as ca-crl.pem in the same update as
	// the other files (so istiod never reads new roots or a new chain
	// with an older CRL set, and a written ca-crl.pem is never dropped).
	CRL []byte
}

// Apply self-checks cacerts, writes it over the Secret read as cur (one
// create or update with a resourceVersion precondition) and rolls istiod
// when opts.Restart says so. Nothing is written when the check fails.
func Apply(ctx context.Context, kube kubeclient.Interface, cur *Current, cacerts *ca.CACerts, annotations map[string]string, opts ApplyOptions, now time.Time) error {
	_, err := apply(ctx, kube, cur, cacerts, annotations, opts, now)
	return err
}

// apply is Apply, returning the Secret as written (nil when the write
// failed or nothing was written).
func apply(ctx context.Context, kube kubeclient.Interface, cur *Current, cacerts *ca.CACerts, annotations map[string]string, opts ApplyOptions, now time.Time) (*kubeclient.Secret, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	files, err := cacerts.Files(opts.Format, now)
	if err != nil {
		return nil, fmt.Errorf("refusing to write cacerts: %w", err)
	}
	if opts.CRL != nil {
		files[CRLFile] = opts.CRL
	}
	var oldRoots []*x509.Certificate
	if cur.CACerts != nil {
		oldRoots = cur.CACerts.Roots
	}
	written, err := WriteSecret(ctx, kube, opts.Secret, cur, opts.Format, files, annotations, opts.Adopt)
	if err != nil {
		return nil, err
	}
	opts.Log.Info("cacerts written", "secret", opts.Secret.Namespace+"/"+opts.Secret.Name,
		"serial", ca.SerialHex(cacerts.Cert.SerialNumber), "not_after", cacerts.Cert.NotAfter.UTC().Format(time.RFC3339), "roots", len(cacerts.Roots))
	d := istiod{kube: kube, namespace: opts.Secret.Namespace, name: opts.IstiodDeployment}
	restart, why, err := d.decide(ctx, opts.Restart, compareRoots(oldRoots, cacerts.Roots, cur.Secret == nil))
	if err != nil {
		opts.Log.Warn("cannot decide whether to restart istiod", "error", err)
		return written, nil
	}
	if restart {
		if err := d.restart(ctx, now); err != nil {
			return written, err
		}
		opts.Log.Info("istiod restarted", "reason", why)
	}
	return written, nil
}
