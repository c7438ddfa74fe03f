package agent

import (
	"crypto/x509"
	"fmt"
	"sync"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
)

// maxCachedCerts bounds the parsed certificates an agent keeps: the
// fleet's current cluster intermediates (one per cluster, two during a
// rotation) must fit, or every reconcile parses them all again.
const maxCachedCerts = 8192

// certCache keeps parsed certificates by their DER, as crlCache keeps
// CRLs (the map's hash of the DER is cheaper than a SHA-256 of it). The
// CRL set of every bundle message lists each current cluster intermediate
// of the fleet, and each message differs from the last by a few: at 1,000
// clusters parsing the set anew cost each agent tens of milliseconds per
// change, repeated on every cluster of the fleet. A nil cache parses
// every time.
type certCache struct {
	mu sync.Mutex
	m  map[string]*x509.Certificate
}

// leanCert is cert with only what the agent reads of a fleet's
// intermediate: its DER, names and key identifiers (matching CRLs to their
// CA), serial number, validity, the CA constraints and public key (checking
// a CRL's signature). Extensions, SANs, name constraints and policies are
// left out: every agent of the fleet keeps every cluster's intermediate.
func leanCert(cert *x509.Certificate) *x509.Certificate {
	return &x509.Certificate{
		Raw:                   cert.Raw,
		RawSubject:            cert.RawSubject,
		RawIssuer:             cert.RawIssuer,
		Version:               cert.Version,
		SerialNumber:          cert.SerialNumber,
		Subject:               cert.Subject,
		NotBefore:             cert.NotBefore,
		NotAfter:              cert.NotAfter,
		KeyUsage:              cert.KeyUsage,
		BasicConstraintsValid: cert.BasicConstraintsValid,
		IsCA:                  cert.IsCA,
		MaxPathLen:            cert.MaxPathLen,
		MaxPathLenZero:        cert.MaxPathLenZero,
		SubjectKeyId:          cert.SubjectKeyId,
		AuthorityKeyId:        cert.AuthorityKeyId,
		PublicKeyAlgorithm:    cert.PublicKeyAlgorithm,
		PublicKey:             cert.PublicKey,
		SignatureAlgorithm:    cert.SignatureAlgorithm,
		Signature:             cert.Signature,
	}
}

// parse returns der parsed (leanCert), from the cache when it was parsed
// before. The result is shared: callers must not change it.
func (c *certCache) parse(der []byte) (*x509.Certificate, error) {
	if c == nil {
		return x509.ParseCertificate(der)
	}
	c.mu.Lock()
	cert, ok := c.m[string(der)]
	c.mu.Unlock()
	if ok {
		return cert, nil
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	cert = leanCert(cert)
	c.mu.Lock()
	defer c.mu.Unlock()
	if cached, ok := c.m[string(der)]; ok { // parsed meanwhile by another caller
		return cached, nil
	}
	if c.m == nil || len(c.m) >= maxCachedCerts {
		c.m = map[string]*x509.Certificate{} // a new fleet set: start over
	}
	c.m[string(der)] = cert
	return cert, nil
}

// crlSet converts the CRL set of a bundle message, its intermediates
// parsed through the cache (as wire.CRLSetFromProto does without one).
func (c *certCache) crlSet(m *meshrootv1.CRLSet) (ca.CRLSet, error) {
	inters := make([]*x509.Certificate, 0, len(m.GetIntermediates()))
	for i, der := range m.GetIntermediates() {
		cert, err := c.parse(der)
		if err != nil {
			return ca.CRLSet{}, fmt.Errorf("CRL set: certificate %d: %v", i+1, err)
		}
		inters = append(inters, cert)
	}
	return ca.CRLSet{CRLs: m.GetCrls(), Intermediates: inters, Missing: m.GetMissing()}, nil
}
