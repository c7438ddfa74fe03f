package ca

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"
)

// ServerCertRequest asks for a TLS server certificate for meshroot's own
// endpoints (the gRPC API, the bundle endpoint).
type ServerCertRequest struct {
	// PublicKey is the server's key, generated in memory by the caller.
	PublicKey crypto.PublicKey
	// DNSNames and IPs are the names clients connect to.
	DNSNames []string
	IPs      []net.IP
	// URIs are SPIFFE IDs for the https_spiffe profile.
	URIs []*url.URL
	TTL  time.Duration
}

// MaxServerCertTTL bounds the lifetime of meshroot's own server certificates:
// they are reissued in memory, so they can be short.
const MaxServerCertTTL = 30 * 24 * time.Hour

// SignServerCert signs a leaf for meshroot's own TLS endpoints: serverAuth
// (and clientAuth, for SPIFFE peers), no CA, NotAfter capped by the issuer.
func (a *Authority) SignServerCert(req ServerCertRequest) (*x509.Certificate, error) {
	if req.PublicKey == nil {
		return nil, errors.New("server certificate: no public key")
	}
	if len(req.DNSNames)+len(req.IPs)+len(req.URIs) == 0 {
		return nil, errors.New("server certificate: no DNS name, IP or URI: pass at least one")
	}
	ttl := req.TTL
	if ttl <= 0 || ttl > MaxServerCertTTL {
		return nil, fmt.Errorf("server certificate TTL %s is outside (0, %s]", ttl, MaxServerCertTTL)
	}
	issuer := a.Certificate()
	now := a.now()
	notAfter := now.Add(ttl)
	if issuer.NotAfter.Before(notAfter) {
		notAfter = issuer.NotAfter
	}
	notBefore := now.Add(-a.policy.Backdate)
	if notBefore.Before(issuer.NotBefore) {
		notBefore = issuer.NotBefore
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	cn := "meshroot"
	if len(req.DNSNames) > 0 {
		cn = req.DNSNames[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        pkix.Name{Organization: issuer.Subject.Organization, CommonName: cn},
		NotBefore:      notBefore.UTC(),
		NotAfter:       notAfter.UTC(),
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:       req.DNSNames,
		IPAddresses:    req.IPs,
		URIs:           req.URIs,
		AuthorityKeyId: issuer.SubjectKeyId,
	}
	cert, err := createCertificate(tmpl, issuer, req.PublicKey, a.signer)
	if err != nil {
		return nil, fmt.Errorf("sign server certificate: %w", err)
	}
	return cert, nil
}
