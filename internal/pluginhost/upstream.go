package pluginhost

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	pluginv1 "github.com/meshroot/meshroot/api/meshroot/plugin/v1"
	"github.com/meshroot/meshroot/ca"
)

// UpstreamConfig names a step-ca upstream and the files its provisioner
// keys and password are in. The plugin reads the files.
type UpstreamConfig struct {
	// Ref is step-ca://HOST:PORT?provisioner=NAME&fingerprint=HEX[&serverProvisioner=NAME].
	Ref string
	// KeyFile is the JWK provisioner's private key (PEM).
	KeyFile string
	// ServerKeyFile is the server CA provisioner's private key (PEM).
	ServerKeyFile string
	// PasswordFile holds the password of the provisioner keys.
	PasswordFile string
}

// Upstream returns the upstream that cfg names, whose calls go to the
// plugin that h starts. Nothing is started or checked until the first
// call; the plugin opens the upstream then.
func Upstream(h *Host, cfg UpstreamConfig) ca.ConstrainingUpstream {
	return &remoteUpstream{h: h, cfg: &pluginv1.UpstreamConfig{
		Ref: cfg.Ref, KeyFile: cfg.KeyFile, ServerKeyFile: cfg.ServerKeyFile, PasswordFile: cfg.PasswordFile,
	}}
}

// upstreamWhat names the upstream in errors.
const upstreamWhat = "step-ca upstream"

type remoteUpstream struct {
	h   *Host
	cfg *pluginv1.UpstreamConfig
}

func (u *remoteUpstream) client(ctx context.Context) (pluginv1.UpstreamClient, error) {
	conn, err := u.h.connect(ctx, upstreamWhat)
	if err != nil {
		return nil, err
	}
	return pluginv1.NewUpstreamClient(conn), nil
}

// Chain is the upstream issuer's chain: issuer first, root last.
func (u *remoteUpstream) Chain(ctx context.Context) ([]*x509.Certificate, error) {
	c, err := u.client(ctx)
	if err != nil {
		return nil, err
	}
	return chain(c.Chain(ctx, &pluginv1.ChainRequest{Upstream: u.cfg}))
}

// SignIntermediate signs a pathlen-0 CA for cluster from csr.
func (u *remoteUpstream) SignIntermediate(ctx context.Context, csr *x509.CertificateRequest, cluster string, ttl time.Duration) ([]*x509.Certificate, error) {
	c, err := u.client(ctx)
	if err != nil {
		return nil, err
	}
	return chain(c.SignIntermediate(ctx, &pluginv1.SignIntermediateRequest{Upstream: u.cfg, Csr: csr.Raw, Cluster: cluster, TtlNanos: int64(ttl)}))
}

// SignConstrainedIntermediate is SignIntermediate with the trust-domain
// name constraint.
func (u *remoteUpstream) SignConstrainedIntermediate(ctx context.Context, csr *x509.CertificateRequest, cluster, trustDomain string, ttl time.Duration) ([]*x509.Certificate, error) {
	c, err := u.client(ctx)
	if err != nil {
		return nil, err
	}
	return chain(c.SignConstrainedIntermediate(ctx, &pluginv1.SignIntermediateRequest{Upstream: u.cfg, Csr: csr.Raw, Cluster: cluster, TrustDomain: trustDomain, TtlNanos: int64(ttl)}))
}

// SignServerCA signs meshroot's server CA from csr.
func (u *remoteUpstream) SignServerCA(ctx context.Context, csr *x509.CertificateRequest, ttl time.Duration) ([]*x509.Certificate, error) {
	c, err := u.client(ctx)
	if err != nil {
		return nil, err
	}
	return chain(c.SignServerCA(ctx, &pluginv1.SignServerCARequest{Upstream: u.cfg, Csr: csr.Raw, TtlNanos: int64(ttl)}))
}

// chain parses the plugin's answer, or turns its error back into the
// upstream's.
func chain(resp *pluginv1.Certificates, err error) ([]*x509.Certificate, error) {
	if err != nil {
		return nil, fail(upstreamWhat, err)
	}
	out := make([]*x509.Certificate, 0, len(resp.GetDer()))
	for i, der := range resp.GetDer() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%s: meshroot-plugin sent certificate %d that cannot be parsed: %v", upstreamWhat, i, err)
		}
		out = append(out, c)
	}
	return out, nil
}
