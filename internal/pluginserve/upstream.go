package pluginserve

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	pluginv1 "github.com/meshroot/meshroot/api/meshroot/plugin/v1"
	"github.com/meshroot/meshroot/internal/pluginrpc"
	"github.com/meshroot/meshroot/upstream/stepca"
)

// upstreamServer serves Upstream over the upstreams it opens, one per
// configuration (reference and file paths).
type upstreamServer struct {
	pluginv1.UnimplementedUpstreamServer

	mu   sync.Mutex
	open map[string]*stepca.Upstream // by the marshalled UpstreamConfig
}

func newUpstreamServer() *upstreamServer {
	return &upstreamServer{open: map[string]*stepca.Upstream{}}
}

// upstream opens, or returns the open, upstream of cfg. An upstream that
// fails to open is tried again on the next request.
func (s *upstreamServer) upstream(ctx context.Context, cfg *pluginv1.UpstreamConfig) (*stepca.Upstream, error) {
	if cfg == nil || !strings.HasPrefix(cfg.GetRef(), "step-ca://") {
		return nil, invalidf("meshroot-plugin: upstream %q is not served by the plugin: it serves step-ca:// upstreams", cfg.GetRef())
	}
	key, err := proto.MarshalOptions{Deterministic: true}.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if up, ok := s.open[string(key)]; ok {
		return up, nil
	}
	up, err := openStepCA(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s.open[string(key)] = up
	return up, nil
}

// Chain returns the upstream issuer's chain.
func (s *upstreamServer) Chain(ctx context.Context, req *pluginv1.ChainRequest) (*pluginv1.Certificates, error) {
	up, err := s.upstream(ctx, req.GetUpstream())
	if err != nil {
		return nil, pluginrpc.ToStatus(err)
	}
	return certs(up.Chain(ctx))
}

// SignIntermediate signs a cluster intermediate.
func (s *upstreamServer) SignIntermediate(ctx context.Context, req *pluginv1.SignIntermediateRequest) (*pluginv1.Certificates, error) {
	up, csr, err := s.forCSR(ctx, req.GetUpstream(), req.GetCsr())
	if err != nil {
		return nil, pluginrpc.ToStatus(err)
	}
	return certs(up.SignIntermediate(ctx, csr, req.GetCluster(), time.Duration(req.GetTtlNanos())))
}

// SignConstrainedIntermediate signs a cluster intermediate with the
// trust-domain name constraint.
func (s *upstreamServer) SignConstrainedIntermediate(ctx context.Context, req *pluginv1.SignIntermediateRequest) (*pluginv1.Certificates, error) {
	up, csr, err := s.forCSR(ctx, req.GetUpstream(), req.GetCsr())
	if err != nil {
		return nil, pluginrpc.ToStatus(err)
	}
	return certs(up.SignConstrainedIntermediate(ctx, csr, req.GetCluster(), req.GetTrustDomain(), time.Duration(req.GetTtlNanos())))
}

// SignServerCA signs meshroot's server CA.
func (s *upstreamServer) SignServerCA(ctx context.Context, req *pluginv1.SignServerCARequest) (*pluginv1.Certificates, error) {
	up, csr, err := s.forCSR(ctx, req.GetUpstream(), req.GetCsr())
	if err != nil {
		return nil, pluginrpc.ToStatus(err)
	}
	return certs(up.SignServerCA(ctx, csr, time.Duration(req.GetTtlNanos())))
}

func (s *upstreamServer) forCSR(ctx context.Context, cfg *pluginv1.UpstreamConfig, der []byte) (*stepca.Upstream, *x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, nil, invalidf("meshroot-plugin: the CSR cannot be parsed: %v", err)
	}
	up, err := s.upstream(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	return up, csr, nil
}

// certs is a chain as the response, or err as a status.
func certs(chain []*x509.Certificate, err error) (*pluginv1.Certificates, error) {
	if err != nil {
		return nil, pluginrpc.ToStatus(err)
	}
	out := &pluginv1.Certificates{}
	for _, c := range chain {
		if c == nil {
			return nil, pluginrpc.ToStatus(fmt.Errorf("meshroot-plugin: the upstream returned an empty certificate"))
		}
		out.Der = append(out.Der, c.Raw)
	}
	return out, nil
}
