package ca

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshroot/meshroot/keys"
)

// DefaultRootTTL is the lifetime of a new root: ten years.
const DefaultRootTTL = 10 * 365 * 24 * time.Hour

// RootOptions describe a new self-signed root.
type RootOptions struct {
	// TrustDomain is the SPIFFE trust domain the root anchors ("example.org").
	TrustDomain string
	// CommonName defaults to "<trust domain> root CA".
	CommonName string
	// TTL defaults to DefaultRootTTL.
	TTL time.Duration
	// Now defaults to time.Now.
	Now time.Time
}

// NewRoot creates a self-signed root CA certificate for signer's key:
// CA:true, KeyUsage CertSign|CRLSign, SubjectKeyId, no path length limit.
func NewRoot(signer crypto.Signer, opts RootOptions) (*x509.Certificate, error) {
	td, err := ParseTrustDomain(opts.TrustDomain)
	if err != nil {
		return nil, err
	}
	if _, err := keys.KeyTypeOf(signer.Public()); err != nil {
		return nil, fmt.Errorf("root key: %w", err)
	}
	ttl := opts.TTL
	if ttl == 0 {
		ttl = DefaultRootTTL
	}
	if ttl < 24*time.Hour {
		return nil, fmt.Errorf("root TTL %s is too short: use at least 24h", ttl)
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	cn := opts.CommonName
	if cn == "" {
		cn = td.Name() + " root CA"
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization:       []string{td.Name()},
			OrganizationalUnit: []string{"meshroot " + SerialHex(serial)[:8]},
			CommonName:         cn,
		},
		NotBefore:             now.Add(-DefaultBackdate).UTC(),
		NotAfter:              now.Add(ttl).UTC(),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	cert, err := createCertificate(tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("create root certificate: %w", err)
	}
	return cert, nil
}

// RootID identifies a trust anchor: the first 16 bytes of the SHA-256 of its
// DER, hex encoded.
func RootID(root *x509.Certificate) string {
	sum := sha256.Sum256(root.Raw)
	return hex.EncodeToString(sum[:16])
}

// ParseTrustDomain validates a SPIFFE trust domain name.
func ParseTrustDomain(s string) (spiffeid.TrustDomain, error) {
	if s == "" {
		return spiffeid.TrustDomain{}, errors.New("no trust domain given: pass --trust-domain, for example example.org")
	}
	td, err := spiffeid.TrustDomainFromString(s)
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("trust domain %q is invalid: %v", s, err)
	}
	if td.Name() != s {
		return spiffeid.TrustDomain{}, fmt.Errorf("trust domain %q is invalid: give the bare name, for example %q", s, td.Name())
	}
	return td, nil
}

// isSelfSigned reports whether c is issued and signed by its own key.
func isSelfSigned(c *x509.Certificate) bool {
	return string(c.RawIssuer) == string(c.RawSubject) && c.CheckSignatureFrom(c) == nil
}
