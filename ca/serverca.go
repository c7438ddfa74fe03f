package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"

	"github.com/meshroot/meshroot/store"
)

// ServerCAMarker is the organizational unit (and common name) that marks
// meshroot's server CA: the pathlen-0 CA under the active root that issues
// meshroot's own TLS certificates (the gRPC server certificate and the
// bundle endpoint's SVID). A server CA is a CA of path length 0 whose
// subject carries this OU and whose extended key usage is serverAuth and
// nothing else (IsServerCA). Cluster intermediates never match: meshroot
// writes their subject (OU "meshroot cluster intermediate"; under Vault,
// the cluster's name only) and gives them no extended key usage, and
// nothing from a cluster's CSR reaches them. No cluster can make a CA
// that matches and chains to a root either: a cluster intermediate has
// path length 0, so any CA it signs fails verification. Agents accept the
// server only through a server CA.
//
// A subject marker rather than a certificate policy OID: meshroot has no
// registered OID arc, and a UUID-based OID (2.25.N) has an arc too large
// for parsers that read OIDs into machine integers, Vault's among them
// (it refuses to sign such a request).
const ServerCAMarker = "meshroot server CA"

// ServerCACommonName is the subject common name of the server CA.
const ServerCACommonName = ServerCAMarker

// ServerCATTL is the lifetime of the server CA. Its key lives in memory
// only; a new server CA is made at half its lifetime, on every restart,
// and whenever the active root changes.
const ServerCATTL = 7 * 24 * time.Hour

// ServerNames are the names meshroot's own TLS certificates carry. The
// server CA is name-constrained to them (DNS names and IP addresses) and
// to URIs of the trust domain (the bundle endpoint's SPIFFE ID).
type ServerNames struct {
	DNSNames []string
	IPs      []net.IP
}

// ParseServerNames sorts names into DNS names and IP addresses.
func ParseServerNames(names []string) ServerNames {
	var n ServerNames
	for _, s := range names {
		if ip := net.ParseIP(s); ip != nil {
			n.IPs = append(n.IPs, ip)
		} else if s != "" {
			n.DNSNames = append(n.DNSNames, s)
		}
	}
	return n
}

// SetServerNames sets the names the server CA is constrained to. Call it
// before the first ServerAuthority; a server CA already made keeps its
// constraints until it is renewed.
func (s *Service) SetServerNames(names ServerNames) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.serverNames = names
}

// serverCATemplate is the server CA's profile: CA, path length 0,
// keyCertSign, serverAuth only, the ServerCAMarker OU, and name
// constraints to the server's own names. IP addresses are excluded unless
// named; DNS names are left unconstrained when none are named.
func serverCATemplate(td string, names ServerNames) *x509.Certificate {
	t := &x509.Certificate{
		Subject:                     pkix.Name{OrganizationalUnit: []string{ServerCAMarker}, CommonName: ServerCACommonName},
		IsCA:                        true,
		BasicConstraintsValid:       true,
		MaxPathLen:                  0,
		MaxPathLenZero:              true,
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		ExtKeyUsage:                 []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		PermittedDNSDomainsCritical: true,
		PermittedDNSDomains:         slices.Clone(names.DNSNames),
	}
	if td != "" {
		t.Subject.Organization = []string{td}
		t.PermittedURIDomains = []string{td}
		t.ExcludedURIDomains = []string{"." + td}
	}
	for _, ip := range names.IPs {
		bits := 8 * len(ip)
		if v4 := ip.To4(); v4 != nil {
			ip, bits = v4, 32
		}
		t.PermittedIPRanges = append(t.PermittedIPRanges, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
	}
	if len(t.PermittedIPRanges) == 0 {
		t.ExcludedIPRanges = allIPs()
	}
	return t
}

// allIPs is every IPv4 and IPv6 address, for an exclusion.
func allIPs() []*net.IPNet {
	return []*net.IPNet{{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, {IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}}
}

// SignServerCA signs meshroot's server CA for pub under this authority
// (see serverCATemplate), valid for ttl or until the issuer expires.
func (a *Authority) SignServerCA(pub crypto.PublicKey, td string, names ServerNames, ttl time.Duration) (*x509.Certificate, error) {
	if a.leafOnly {
		return nil, errors.New("internal error: a server CA cannot sign another server CA")
	}
	issuer := a.Certificate()
	now := a.now()
	tmpl := serverCATemplate(td, names)
	tmpl.NotBefore = maxTime(now.Add(-a.policy.Backdate), issuer.NotBefore).UTC()
	tmpl.NotAfter = minTime(now.Add(ttl), issuer.NotAfter).UTC()
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	if tmpl.SubjectKeyId, err = subjectKeyID(pub); err != nil {
		return nil, fmt.Errorf("server CA subject key id: %w", err)
	}
	tmpl.AuthorityKeyId = issuer.SubjectKeyId
	cert, err := createCertificate(tmpl, issuer, pub, a.signer)
	if err != nil {
		return nil, fmt.Errorf("sign the server CA: %w", err)
	}
	return cert, nil
}

// NewServerCACSR is the certificate request for a server CA an upstream
// signs: the server CA's subject, and its policy, extended key usage and
// name constraints as requested extensions, so that an upstream that copies
// the request's subject and extensions (Vault's use_csr_values) issues the
// same profile as SignServerCA.
func NewServerCACSR(key crypto.Signer, td string, names ServerNames) (*x509.CertificateRequest, error) {
	tmpl := serverCATemplate(td, names)
	// Encode the extensions the way Go encodes them in a certificate.
	tmpl.SerialNumber = big.NewInt(1)
	tmpl.NotBefore, tmpl.NotAfter = time.Unix(0, 0), time.Unix(1, 0)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("server CA request: %w", err)
	}
	self, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	var exts []pkix.Extension
	for _, e := range self.Extensions {
		if e.Id.Equal(oidExtKeyUsage) || e.Id.Equal(oidNameConstraints) {
			exts = append(exts, e)
		}
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: tmpl.Subject, ExtraExtensions: exts}, key)
	if err != nil {
		return nil, fmt.Errorf("server CA request: %w", err)
	}
	return x509.ParseCertificateRequest(csrDER)
}

var (
	oidNameConstraints = asn1.ObjectIdentifier{2, 5, 29, 30}
	oidExtKeyUsage     = asn1.ObjectIdentifier{2, 5, 29, 37}
)

// IsServerCA reports whether c is a meshroot server CA: a CA of path
// length 0 whose subject OU includes ServerCAMarker and whose extended key
// usage is serverAuth alone.
func IsServerCA(c *x509.Certificate) bool {
	if c == nil || !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		return false
	}
	return slices.Contains(c.Subject.OrganizationalUnit, ServerCAMarker) &&
		len(c.UnknownExtKeyUsage) == 0 && slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})
}

// ErrNoActiveRoot is returned (wrapped) while there is no active root:
// nothing can be signed yet.
var ErrNoActiveRoot = errors.New("no active root")

// ErrNotServerCA is returned (wrapped) by VerifyServerChain when the
// server's certificate chains to a trusted root but not through a meshroot
// server CA: a cluster intermediate, or another CA under the same root,
// issued it.
var ErrNotServerCA = errors.New("the certificate was not issued by a meshroot server CA")

// VerifyServerChain verifies the TLS chain a meshroot server presented
// (leaf first) for dnsName at now, against roots, and requires that the
// leaf's issuer be a meshroot server CA (IsServerCA) below a root. A chain
// that verifies only through a cluster intermediate, or a leaf signed by
// a root directly, is refused with ErrNotServerCA.
func VerifyServerChain(certs []*x509.Certificate, roots *x509.CertPool, dnsName string, now time.Time) error {
	if len(certs) == 0 {
		return errors.New("no certificate presented")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{
		DNSName: dnsName, Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return err
	}
	for _, chain := range chains {
		if len(chain) >= 3 && IsServerCA(chain[1]) {
			return nil
		}
	}
	issuer := chains[0][min(1, len(chains[0])-1)]
	return fmt.Errorf("%w: %q (for %v) is signed by %q, which is not a meshroot server CA (a path-length-0 CA with OU %q and extended key usage serverAuth only); whoever holds that CA's key (a cluster's cacerts, or another user of the same root) may be impersonating the server",
		ErrNotServerCA, certs[0].Subject.CommonName, append(certs[0].DNSNames, ipStrings(certs[0].IPAddresses)...), issuer.Subject.String(), ServerCAMarker)
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

// ServerAuthority returns the active root and the authority that signs
// meshroot's own TLS certificates: a server CA (see ServerCAMarker) under
// the active root, with a P-256 key held in memory. Under a local root the
// root's key signs it; under an upstream the upstream does. It is made
// again at half its lifetime, and for each new active root.
func (s *Service) ServerAuthority(ctx context.Context) (store.Root, *Authority, error) {
	root, err := s.ActiveRoot(ctx)
	if err != nil {
		return store.Root{}, nil, err
	}
	s.mu.Lock()
	cached := s.leafAuth[root.ID]
	names := s.serverNames
	s.mu.Unlock()
	if cached != nil {
		c := cached.Certificate()
		if s.now().Before(c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) / 2)) {
			return root, cached, nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return store.Root{}, nil, err
	}
	var chain []*x509.Certificate
	if isUpstream(root) {
		chain, err = s.upstreamServerCA(ctx, root, key, names)
	} else {
		var auth *Authority
		if auth, err = s.Authority(ctx, root); err == nil {
			var cert *x509.Certificate
			if cert, err = auth.SignServerCA(key.Public(), root.TrustDomain, names, ServerCATTL); err == nil {
				chain = append([]*x509.Certificate{cert}, auth.Chain()...)
			}
		}
	}
	if err != nil {
		return store.Root{}, nil, err
	}
	a := &Authority{chain: chain, signer: key, policy: s.policy.withDefaults(), now: s.now, leafOnly: true}
	if len(chain) < 2 || !isSelfSigned(a.Root()) || !IsServerCA(chain[0]) {
		return store.Root{}, nil, errors.New("internal error: the server CA chain is not a server CA under a root")
	}
	if _, err := verifyChain(chain, chain[len(chain)-1:], s.now()); err != nil {
		return store.Root{}, nil, fmt.Errorf("the server CA does not verify under root %s: %w", root.ID, err)
	}
	s.mu.Lock()
	s.leafAuth[root.ID] = a
	s.mu.Unlock()
	return root, a, nil
}

// upstreamServerCA has the upstream sign the server CA and checks that
// what comes back carries the server CA's marker.
func (s *Service) upstreamServerCA(ctx context.Context, root store.Root, key crypto.Signer, names ServerNames) ([]*x509.Certificate, error) {
	up, err := s.upstream(ctx, root.KeyRef)
	if err != nil {
		return nil, err
	}
	csr, err := NewServerCACSR(key, root.TrustDomain, names)
	if err != nil {
		return nil, err
	}
	chain, err := up.SignServerCA(ctx, csr, ServerCATTL)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: server CA for meshroot's own TLS: %w", root.KeyRef, err)
	}
	if len(chain) == 0 || !IsServerCA(chain[0]) {
		return nil, fmt.Errorf("upstream %s returned a server CA without OU %q, extended key usage serverAuth alone, or path length 0: agents would refuse the server; the upstream must copy the request's subject and extensions", root.KeyRef, ServerCAMarker)
	}
	pub, _ := chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if pub == nil || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("upstream %s returned a server CA for another key", root.KeyRef)
	}
	return chain, nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
