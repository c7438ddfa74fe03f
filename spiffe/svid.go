package spiffe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/certkeeper"
)

// DefaultSVIDTTL is the lifetime of the bundle endpoint's SVID.
const DefaultSVIDTTL = time.Hour

// BundleEndpointPath is the path of the bundle endpoint's SPIFFE ID:
// spiffe://<trust domain>/meshroot/bundle-endpoint.
const BundleEndpointPath = "/meshroot/bundle-endpoint"

// SVIDSource holds the X.509-SVID the bundle endpoint presents in the
// https_spiffe profile: spiffe://<td>/meshroot/bundle-endpoint (a URI SAN
// and nothing else), for a P-256 key that never leaves memory, signed by
// meshroot's server CA under the active root (ca.Service.ServerAuthority).
// A certkeeper.Keeper keeps it fresh (renewal at half its lifetime).
type SVIDSource struct {
	svc *ca.Service
	ttl time.Duration
	log *slog.Logger

	mu sync.Mutex
	td string // the active root's, when not given; set at the first issuance

	keeper *certkeeper.Keeper
}

// NewSVIDSource returns a source of SVIDs for trustDomain signed through
// svc, each valid for ttl (<= 0: DefaultSVIDTTL). The trust domain is
// checked at the first issuance; an empty one is the active root's.
func NewSVIDSource(svc *ca.Service, trustDomain string, ttl time.Duration, log *slog.Logger) *SVIDSource {
	if ttl <= 0 {
		ttl = DefaultSVIDTTL
	}
	if log == nil {
		log = slog.Default()
	}
	s := &SVIDSource{svc: svc, td: trustDomain, ttl: ttl, log: log}
	s.keeper = certkeeper.New("bundle endpoint SVID", s.issue, log)
	return s
}

// ID returns the SPIFFE ID the SVIDs carry.
func (s *SVIDSource) ID() (spiffeid.ID, error) {
	s.mu.Lock()
	td := s.td
	s.mu.Unlock()
	return svidID(td)
}

func svidID(trustDomain string) (spiffeid.ID, error) {
	td, err := ca.ParseTrustDomain(trustDomain)
	if err != nil {
		return spiffeid.ID{}, err
	}
	return spiffeid.FromPath(td, BundleEndpointPath)
}

// GetCertificate returns the current SVID with its chain, for
// tls.Config.GetCertificate. When there is none yet, or it has expired
// (Run is not running or keeps failing), it issues one first.
func (s *SVIDSource) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.keeper.GetCertificate(hello)
}

// Reissue asks Run for a new SVID now, for example because the active root
// changed.
func (s *SVIDSource) Reissue() { s.keeper.Reissue() }

// Run keeps the SVID fresh by certkeeper's rule until ctx ends.
func (s *SVIDSource) Run(ctx context.Context) error { return s.keeper.Run(ctx) }

// issue signs a new SVID under the server CA.
func (s *SVIDSource) issue(ctx context.Context) (*tls.Certificate, error) {
	if s.svc == nil {
		return nil, errors.New("no CA service")
	}
	root, auth, err := s.svc.ServerAuthority(ctx)
	if err != nil {
		return nil, certkeeper.Waiting(err)
	}
	s.mu.Lock()
	if s.td == "" {
		s.td = root.TrustDomain
	}
	td := s.td
	s.mu.Unlock()
	id, err := svidID(td)
	if err != nil {
		return nil, err
	}
	if root.TrustDomain != "" && root.TrustDomain != td {
		return nil, fmt.Errorf("the active root %s is of trust domain %s, not %s", root.ID, root.TrustDomain, td)
	}
	cert, err := certkeeper.Sign(auth, ca.ServerCertRequest{URIs: []*url.URL{id.URL()}, TTL: s.ttl})
	if err != nil {
		return nil, err
	}
	s.log.Info("bundle endpoint SVID issued", "spiffe_id", id.String(), "root_id", root.ID,
		"serial", ca.SerialHex(cert.Leaf.SerialNumber), "not_after", cert.Leaf.NotAfter)
	return cert, nil
}

// current returns the current SVID's leaf (tests).
func (s *SVIDSource) current() *x509.Certificate {
	if c, err := s.keeper.Current(); err == nil {
		return c.Leaf
	}
	return nil
}
