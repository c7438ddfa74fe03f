package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshroot/meshroot/store"
)

// Upstream is a signing authority outside meshroot (Vault's PKI engine,
// step-ca):
// meshroot applies its own policy to each request first, forwards the CSR,
// and checks what comes back.
type Upstream interface {
	// Chain is the upstream issuer's chain: issuer first, root last.
	Chain(ctx context.Context) ([]*x509.Certificate, error)
	// SignIntermediate signs a pathlen-0 CA for cluster from csr and
	// returns it first, then the chain up to the root.
	SignIntermediate(ctx context.Context, csr *x509.CertificateRequest, cluster string, ttl time.Duration) ([]*x509.Certificate, error)
	// SignServerCA signs meshroot's server CA from csr: a pathlen-0 CA
	// that carries the extensions the CSR requests (ServerCAPolicy, the
	// extended key usage, the name constraints) and its subject. It
	// returns it first, then the chain up to the root.
	SignServerCA(ctx context.Context, csr *x509.CertificateRequest, ttl time.Duration) ([]*x509.Certificate, error)
}

// ConstrainingUpstream is an Upstream that can also sign an intermediate
// with the trust-domain name constraint (policy.trustDomainConstraint).
// Upstreams without it refuse constrained requests.
type ConstrainingUpstream interface {
	Upstream
	// SignConstrainedIntermediate is SignIntermediate with a critical URI
	// name constraint permitting trustDomain and excluding its subdomains.
	SignConstrainedIntermediate(ctx context.Context, csr *x509.CertificateRequest, cluster, trustDomain string, ttl time.Duration) ([]*x509.Certificate, error)
}

// UpstreamOpener opens the upstream that a root's reference names
// ("vault-pki://MOUNT?issuer=NAME", "step-ca://HOST:PORT?provisioner=NAME&fingerprint=HEX").
type UpstreamOpener func(ctx context.Context, ref string) (Upstream, error)

// SetUpstreams lets the service use upstream signing authorities.
func (s *Service) SetUpstreams(open UpstreamOpener) { s.upstreams = open }

// UpstreamScheme starts the references of Vault PKI upstreams.
const UpstreamScheme = "vault-pki://"

// StepCAScheme starts the references of step-ca upstreams.
const StepCAScheme = "step-ca://"

func isUpstream(r store.Root) bool { return isUpstreamRef(r.KeyRef) }

func isUpstreamRef(ref string) bool {
	return strings.HasPrefix(ref, UpstreamScheme) || strings.HasPrefix(ref, StepCAScheme)
}

func (s *Service) upstream(ctx context.Context, ref string) (Upstream, error) {
	if s.upstreams == nil {
		return nil, fmt.Errorf("the signing authority %s is an upstream, and none is configured: configure Vault (--vault-addr)", ref)
	}
	return s.upstreams(ctx, ref)
}

// InitUpstreamRoot makes an upstream (Vault PKI, step-ca) the active signing
// authority of trust domain td: its chain's root becomes the trust anchor.
func (s *Service) InitUpstreamRoot(ctx context.Context, td, ref string) (store.Root, error) {
	actor := ActorFrom(ctx)
	r, err := s.initUpstreamRoot(ctx, actor, td, ref)
	if err != nil {
		return store.Root{}, s.auditRefusal(ctx, actor, "root.init", td, err)
	}
	return r, nil
}

func (s *Service) initUpstreamRoot(ctx context.Context, actor Actor, td, ref string) (store.Root, error) {
	if _, err := ParseTrustDomain(td); err != nil {
		return store.Root{}, refuse(err)
	}
	if !isUpstreamRef(ref) {
		return store.Root{}, refusef("upstream %q: want %sMOUNT[?issuer=NAME] or %sHOST:PORT?provisioner=NAME&fingerprint=HEX", ref, UpstreamScheme, StepCAScheme)
	}
	if err := s.refuseSecondRoot(ctx, td); err != nil {
		return store.Root{}, err
	}
	up, err := s.upstream(ctx, ref)
	if err != nil {
		return store.Root{}, err
	}
	chain, err := up.Chain(ctx)
	if err != nil {
		return store.Root{}, err
	}
	if len(chain) == 0 || !isSelfSigned(chain[len(chain)-1]) {
		return store.Root{}, refusef("upstream %s: its chain does not end at a self-signed root", ref)
	}
	if !chain[0].IsCA || chain[0].KeyUsage&x509.KeyUsageCertSign == 0 || (chain[0].MaxPathLen == 0 && chain[0].MaxPathLenZero) {
		return store.Root{}, refusef("upstream %s: its issuer %q cannot issue cluster intermediates (not a CA with keyCertSign and path length >= 1)", ref, chain[0].Subject)
	}
	// Every CA above the issuer needs room for the CAs below it, the
	// cluster intermediate included: a root with path length 1 over an
	// issuing intermediate (as `step ca init` makes them) has none.
	for i, c := range chain[1:] {
		if c.MaxPathLen >= 0 && (c.MaxPathLen > 0 || c.MaxPathLenZero) && c.MaxPathLen < i+2 {
			return store.Root{}, refusef("upstream %s: %q has path length %d, but %d CAs would be below it with a cluster intermediate: its chain cannot hold cluster intermediates", ref, c.Subject, c.MaxPathLen, i+2)
		}
	}
	root := store.Root{
		ID: RootID(chain[len(chain)-1]), TrustDomain: td, State: store.RootActive, KeyRef: ref,
		ChainPEM: EncodeCerts(chain), NotAfter: chain[0].NotAfter, CreatedAt: s.now().UTC(),
	}
	err = s.saveRoot(ctx, actor, "root.init", &root, map[string]any{"upstream": ref, "chain_length": len(chain), "issuer": chain[0].Subject.String()})
	return root, err
}

// signUpstream applies the policy, forwards the CSR, and checks the answer:
// a pathlen-0 CA with keyCertSign for the CSR's key, chaining to the root.
func (s *Service) signUpstream(ctx context.Context, root store.Root, req IntermediateRequest, policy Policy) ([]*x509.Certificate, error) {
	_, ttl, err := policy.withDefaults().checkRequest(req)
	if err != nil {
		return nil, refuse(err)
	}
	up, err := s.upstream(ctx, root.KeyRef)
	if err != nil {
		return nil, err
	}
	constrain := req.TrustDomainConstraint || policy.TrustDomainConstraint
	var chain []*x509.Certificate
	if cu, ok := up.(ConstrainingUpstream); ok && constrain {
		chain, err = cu.SignConstrainedIntermediate(ctx, req.CSR, req.Cluster, req.TrustDomain, ttl)
	} else if constrain {
		return nil, refusef("the trust-domain name constraint is not available with the upstream %s", root.KeyRef)
	} else {
		chain, err = up.SignIntermediate(ctx, req.CSR, req.Cluster, ttl)
	}
	if err != nil {
		return nil, err
	}
	if len(chain) < 2 {
		return nil, fmt.Errorf("upstream %s returned a chain of %d", root.KeyRef, len(chain))
	}
	c := chain[0]
	pub, _ := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !c.IsCA || c.MaxPathLen != 0 || !c.MaxPathLenZero || c.KeyUsage&x509.KeyUsageCertSign == 0 || pub == nil || !pub.Equal(req.CSR.PublicKey) {
		return nil, fmt.Errorf("upstream %s returned a certificate outside the intermediate profile (CA, pathlen 0, keyCertSign, the CSR's key): refusing it", root.KeyRef)
	}
	if constrain && !trustDomainConstrained(c, req.TrustDomain) {
		return nil, fmt.Errorf("upstream %s returned an intermediate without the trust-domain name constraint asked for (critical, permitting %s and excluding .%s): refusing it", root.KeyRef, req.TrustDomain, req.TrustDomain)
	}
	stored, err := ParseCerts(root.ChainPEM)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(chain[len(chain)-1].Raw, stored[len(stored)-1].Raw) {
		return nil, fmt.Errorf("upstream %s signed under another root than the one registered (%s)", root.KeyRef, root.ID)
	}
	if _, err := verifyChain(chain, stored[len(stored)-1:], s.now()); err != nil {
		return nil, fmt.Errorf("upstream %s: the returned chain does not verify: %w", root.KeyRef, err)
	}
	return chain, nil
}

// trustDomainConstrained reports whether c carries exactly the name
// constraint SignIntermediate writes for trust domain td.
func trustDomainConstrained(c *x509.Certificate, td string) bool {
	return c.PermittedDNSDomainsCritical && slices.Equal(c.PermittedURIDomains, []string{td}) &&
		slices.Equal(c.ExcludedURIDomains, []string{"." + td})
}
