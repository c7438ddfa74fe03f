package ca

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"regexp"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// clusterNamePattern is a DNS label: what Kubernetes and Istio accept as a
// cluster name.
var clusterNamePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidateClusterName reports whether name is usable as a cluster name.
func ValidateClusterName(name string) error {
	if len(name) > 63 {
		// Not quoted: the name may be a requester's 64 KiB.
		return fmt.Errorf("cluster name is invalid: %d bytes long; use 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit", len(name))
	}
	if !clusterNamePattern.MatchString(name) {
		return fmt.Errorf("cluster name %q is invalid: use 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit", name)
	}
	return nil
}

// checkRequest applies the policy to a request before anything is signed:
// cluster name, trust domain, CSR, and the TTL (zero takes the default).
func (p Policy) checkRequest(req IntermediateRequest) (spiffeid.TrustDomain, time.Duration, error) {
	if err := ValidateClusterName(req.Cluster); err != nil {
		return spiffeid.TrustDomain{}, 0, err
	}
	td, err := ParseTrustDomain(req.TrustDomain)
	if err != nil {
		return spiffeid.TrustDomain{}, 0, err
	}
	if err := p.checkCSR(req.CSR); err != nil {
		return spiffeid.TrustDomain{}, 0, err
	}
	ttl := req.TTL
	switch {
	case ttl == 0:
		ttl = p.DefaultTTL
	case ttl < 0:
		return td, 0, fmt.Errorf("requested TTL %s is negative", ttl)
	case ttl > p.MaxTTL:
		return td, 0, fmt.Errorf("requested TTL %s exceeds the policy maximum %s: ask for less", ttl, p.MaxTTL)
	case ttl < p.MinTTL:
		return td, 0, fmt.Errorf("requested TTL %s is below the policy minimum %s", ttl, p.MinTTL)
	}
	return td, ttl, nil
}

// IntermediateRequest asks for a cluster intermediate.
type IntermediateRequest struct {
	// Cluster names the cluster; it becomes the subject's common name.
	Cluster string
	// TrustDomain is the cluster's SPIFFE trust domain.
	TrustDomain string
	// CSR carries the intermediate's public key, generated in the cluster.
	CSR *x509.CertificateRequest
	// TTL is the requested lifetime; zero takes the policy default.
	TTL time.Duration
	// TrustDomainConstraint asked for the URI name constraint, which every
	// intermediate now carries; it is kept so that old callers compile.
	TrustDomainConstraint bool
	// PermitDNS are DNS domains registered for the cluster, permitted in
	// addition to the policy's (istio-system.svc by default).
	PermitDNS []string
	// PermitIPs are IP ranges registered for the cluster: the only IP
	// addresses its intermediate may certify (none when empty).
	PermitIPs []*net.IPNet
}

// SignIntermediate signs a cluster intermediate for req under the policy:
// CA:true, MaxPathLen 0, KeyUsage CertSign|CRLSign|DigitalSignature, SKI and
// AKI, a random 128-bit serial, NotBefore backdated, NotAfter the smallest
// of the requested TTL and the issuer's own NotAfter, and critical name
// constraints (see clusterNameConstraints).
func (a *Authority) SignIntermediate(req IntermediateRequest) (*x509.Certificate, error) {
	if a.leafOnly {
		return nil, refusef("this signing authority issues meshroot's own TLS certificates only; cluster intermediates come from the upstream")
	}
	p := a.policy
	td, ttl, err := p.checkRequest(req)
	if err != nil {
		return nil, refuse(err)
	}
	issuer := a.Certificate()
	now := a.now()
	notAfter := now.Add(ttl)
	if issuer.NotAfter.Before(notAfter) {
		notAfter = issuer.NotAfter
	}
	if notAfter.Sub(now) < p.MinTTL {
		return nil, refusef("signing authority %q expires at %s, less than the minimum intermediate lifetime %s from now: rotate the root or import a longer-lived signing CA",
			issuer.Subject.CommonName, issuer.NotAfter.UTC().Format(time.RFC3339), p.MinTTL)
	}
	notBefore := now.Add(-p.Backdate)
	if notBefore.Before(issuer.NotBefore) {
		notBefore = issuer.NotBefore
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	ski, err := subjectKeyID(req.CSR.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("subject key id: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization:       []string{td.Name()},
			OrganizationalUnit: []string{"meshroot cluster intermediate"},
			CommonName:         req.Cluster,
		},
		NotBefore:             notBefore.UTC(),
		NotAfter:              notAfter.UTC(),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              grantedKeyUsage,
		SubjectKeyId:          ski,
		AuthorityKeyId:        issuer.SubjectKeyId,
	}
	clusterNameConstraints(tmpl, td.Name(), p.dnsDomains(), req.PermitDNS, req.PermitIPs)
	cert, err := createCertificate(tmpl, issuer, req.CSR.PublicKey, a.signer)
	if err != nil {
		return nil, fmt.Errorf("sign intermediate for cluster %s: %w", req.Cluster, err)
	}
	if cert.MaxPathLen != 0 || !cert.MaxPathLenZero {
		return nil, errors.New("internal error: signed intermediate lost its path length 0")
	}
	return cert, nil
}

// clusterNameConstraints limits what a cluster intermediate can certify, so
// that whoever holds a cluster's cacerts key can sign workload identities
// of its trust domain and istiod's own serving certificate, and nothing
// that other software trusting the same root would take for one of its
// servers:
//   - URIs: only in the trust domain (its host permitted, its subdomains,
//     which are other trust domains, excluded: verifiers apply DNS subtree
//     rules to URI hosts);
//   - DNS names: only under dnsDomains (the policy's, istio-system.svc by
//     default, where istiod's serving names live) and the cluster's own
//     registered domains;
//   - IP addresses: only in the cluster's registered ranges; none when it
//     has none.
func clusterNameConstraints(tmpl *x509.Certificate, td string, dnsDomains, permitDNS []string, permitIPs []*net.IPNet) {
	tmpl.PermittedDNSDomainsCritical = true
	tmpl.PermittedURIDomains = []string{td}
	tmpl.ExcludedURIDomains = []string{"." + td}
	tmpl.PermittedDNSDomains = append(append([]string(nil), dnsDomains...), permitDNS...)
	if len(permitIPs) > 0 {
		tmpl.PermittedIPRanges = permitIPs
	} else {
		tmpl.ExcludedIPRanges = allIPs()
	}
}
