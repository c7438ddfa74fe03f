package spiffe

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshroot/meshroot/ca"
)

// DefaultSVIDTTL is the lifetime of the bundle endpoint's SVID.
const DefaultSVIDTTL = time.Hour

// BundleEndpointPath is the path of the bundle endpoint's SPIFFE ID:
// spiffe://<trust domain>/meshroot/bundle-endpoint.
const BundleEndpointPath = "/meshroot/bundle-endpoint"

// SVIDSource holds the X.509-SVID the bundle endpoint presents in the
// https_spiffe profile: spiffe://<td>/meshroot/bundle-endpoint (a URI SAN
// and nothing else), for a P-256 key that never leaves memory, signed by
// the active root's signing authority. Run keeps it fresh.
type SVIDSource struct {
	svc *ca.Service
	td  string
	ttl time.Duration
	log *slog.Logger
	now func() time.Time

	cur     atomic.Pointer[svid]
	issueMu sync.Mutex // one issuance at a time
	reissue chan struct{}
}

type svid struct {
	cert     *tls.Certificate
	issuedAt time.Time
	rootID   string
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
	return &SVIDSource{svc: svc, td: trustDomain, ttl: ttl, log: log, now: time.Now, reissue: make(chan struct{}, 1)}
}

// ID returns the SPIFFE ID the SVIDs carry.
func (s *SVIDSource) ID() (spiffeid.ID, error) {
	td, err := ca.ParseTrustDomain(s.td)
	if err != nil {
		return spiffeid.ID{}, err
	}
	return spiffeid.FromPath(td, BundleEndpointPath)
}

// GetCertificate returns the current SVID with its chain, for
// tls.Config.GetCertificate. When there is none yet, or it has expired
// (Run is not running or keeps failing), it issues one first.
func (s *SVIDSource) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if cur := s.cur.Load(); cur != nil && s.now().Before(cur.cert.Leaf.NotAfter) {
		return cur.cert, nil
	}
	ctx := context.Background()
	if hello != nil && hello.Context() != nil {
		ctx = hello.Context()
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cur, err := s.issueIfStale(ctx)
	if err != nil {
		return nil, err
	}
	return cur.cert, nil
}

// Reissue asks Run for a new SVID now, for example because the active root
// changed.
func (s *SVIDSource) Reissue() {
	select {
	case s.reissue <- struct{}{}:
	default:
	}
}

// Run issues an SVID, reissues it at half its lifetime and on Reissue, and
// retries a failed issuance with backoff (1 s doubling to 1 min) while the
// last good SVID keeps being served. It returns when ctx ends.
func (s *SVIDSource) Run(ctx context.Context) error {
	backoff := time.Second
	var wait time.Duration
	if cur := s.cur.Load(); cur == nil {
		wait = 0
	} else {
		wait = s.renewAt(cur).Sub(s.now())
	}
	t := time.NewTimer(max(wait, 0))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.reissue:
		}
		cur, err := s.issue(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Error("bundle endpoint SVID: issuance failed; the last SVID stays in use", "trust_domain", s.td, "retry_in", backoff, "error", err)
			t.Reset(backoff)
			backoff = min(backoff*2, time.Minute)
			continue
		}
		backoff = time.Second
		t.Reset(max(s.renewAt(cur).Sub(s.now()), time.Second))
	}
}

// renewAt is halfway between an SVID's issuance and its NotAfter.
func (s *SVIDSource) renewAt(v *svid) time.Time {
	return v.issuedAt.Add(v.cert.Leaf.NotAfter.Sub(v.issuedAt) / 2)
}

// issueIfStale issues an SVID unless there is a valid one (which another
// caller may have just issued).
func (s *SVIDSource) issueIfStale(ctx context.Context) (*svid, error) {
	s.issueMu.Lock()
	defer s.issueMu.Unlock()
	if cur := s.cur.Load(); cur != nil && s.now().Before(cur.cert.Leaf.NotAfter) {
		return cur, nil
	}
	return s.issueLocked(ctx)
}

// issue signs a new SVID under the active root and makes it current.
func (s *SVIDSource) issue(ctx context.Context) (*svid, error) {
	s.issueMu.Lock()
	defer s.issueMu.Unlock()
	return s.issueLocked(ctx)
}

func (s *SVIDSource) issueLocked(ctx context.Context) (*svid, error) {
	if s.svc == nil {
		return nil, errors.New("bundle endpoint SVID: no CA service")
	}
	root, auth, err := s.svc.ActiveAuthority(ctx)
	if err != nil {
		return nil, fmt.Errorf("bundle endpoint SVID: %w", err)
	}
	if s.td == "" {
		s.td = root.TrustDomain // under issueMu; ID() reads it after the first issuance
	}
	id, err := s.ID()
	if err != nil {
		return nil, fmt.Errorf("bundle endpoint SVID: %w", err)
	}
	if root.TrustDomain != "" && root.TrustDomain != s.td {
		return nil, fmt.Errorf("bundle endpoint SVID: the active root %s is of trust domain %s, not %s", root.ID, root.TrustDomain, s.td)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("bundle endpoint SVID key: %w", err)
	}
	issuedAt := s.now()
	leaf, err := auth.SignServerCert(ca.ServerCertRequest{PublicKey: key.Public(), URIs: []*url.URL{id.URL()}, TTL: s.ttl})
	if err != nil {
		return nil, fmt.Errorf("bundle endpoint SVID: %w", err)
	}
	chain := auth.Chain()
	raw := [][]byte{leaf.Raw}
	for _, c := range chain[:len(chain)-1] { // every CA below the root
		raw = append(raw, c.Raw)
	}
	v := &svid{cert: &tls.Certificate{Certificate: raw, PrivateKey: key, Leaf: leaf}, issuedAt: issuedAt, rootID: root.ID}
	s.cur.Store(v)
	s.log.Info("bundle endpoint SVID issued", "spiffe_id", id.String(), "root_id", root.ID,
		"serial", ca.SerialHex(leaf.SerialNumber), "not_after", leaf.NotAfter)
	return v, nil
}

// current returns the current SVID's leaf (tests).
func (s *SVIDSource) current() *x509.Certificate {
	if v := s.cur.Load(); v != nil {
		return v.cert.Leaf
	}
	return nil
}
