package agent

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/meshroot/meshroot/ca"
)

// crlCA is what planning ca-crl.pem reads of a CA: its DER (telling CAs
// apart, and the key of remembered signature checks), names and key
// identifier (matching CRLs to it) and validity. Every
// agent of a fleet keeps one per cluster intermediate of the fleet, and a
// parsed x509.Certificate is ~1.5 KB before its fields' contents, so the
// fleet's intermediates are kept as this (~0.3 KB besides the DER) and
// parsed again only to check a CRL signature the cache has not seen
// (crlCache.checkEntry).
type crlCA struct {
	// cert is the parsed certificate when the caller had one (the roots,
	// the cluster's own chain); nil for a fleet intermediate from
	// certCache.
	cert       *x509.Certificate
	raw        []byte
	rawSubject []byte
	rawIssuer  []byte
	keyID      []byte // subject key identifier
	notBefore  time.Time
	notAfter   time.Time
	// id tells CAs apart (SHA-256 of raw); subject and key match them
	// with the CRLs they signed (issuerIDs of rawSubject and keyID, as a
	// crlEntry's issuer and issuerKey). Computed once: the plan looks
	// up every CA of the fleet by them on every change.
	id, subject, key [32]byte
}

// crlCAOf is c as the CRL plan reads it; keep says whether to keep c
// itself (otherwise it is parsed again when a signature check needs it).
func crlCAOf(c *x509.Certificate, keep bool) *crlCA {
	out := &crlCA{
		raw: c.Raw, rawSubject: c.RawSubject, rawIssuer: c.RawIssuer, keyID: c.SubjectKeyId,
		notBefore: c.NotBefore, notAfter: c.NotAfter, id: sha256.Sum256(c.Raw),
	}
	out.subject, out.key = issuerIDs(c.RawSubject, c.SubjectKeyId)
	if keep {
		out.cert = c
	}
	return out
}

// crlCAs is cs as the CRL plan reads them, each kept.
func crlCAs(cs []*x509.Certificate) []*crlCA {
	out := make([]*crlCA, len(cs))
	for i, c := range cs {
		out[i] = crlCAOf(c, true)
	}
	return out
}

// certificate returns the CA's certificate, parsing it again when it was
// not kept.
func (c *crlCA) certificate() (*x509.Certificate, error) {
	if c.cert != nil {
		return c.cert, nil
	}
	return x509.ParseCertificate(c.raw)
}

// name is the CA's subject and serial, as logs and CRLPlan.Missing name
// it (only CAs without a current CRL are named: it is not kept).
func (c *crlCA) name() string {
	cert, err := c.certificate()
	if err != nil {
		return fmt.Sprintf("a CA that no longer parses: %v", err)
	}
	return fmt.Sprintf("%s (serial %s)", cert.Subject, ca.SerialHex(cert.SerialNumber))
}

// issuerIDs identify a CA by name, and by name and key identifier (CAs
// that share a name, as a cluster's successive intermediates do, differ
// by key): the SHA-256 of the DER name, and of the name's length, the
// name and the key identifier.
func issuerIDs(name, keyID []byte) (byName, byKey [32]byte) {
	byName = sha256.Sum256(name)
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(name)))
	h.Write(n[:])
	h.Write(name)
	h.Write(keyID)
	h.Sum(byKey[:0])
	return byName, byKey
}
