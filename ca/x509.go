package ca

import (
	"crypto"
	"crypto/fips140"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // the subject key identifier of RFC 5280 4.2.1.2 (1)
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
)

// The two certificate helpers the authority needs, with the standard
// library only: go.step.sm/crypto/x509util would also link its template
// engine (sprig, go-jose), which the agent, that imports this package,
// never uses.

// createCertificate signs template with signer as parent (template itself
// for a self-signed certificate) and parses the result. The template
// carries its serial number; a missing subject key identifier is derived
// from pub.
func createCertificate(template, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	if template.SerialNumber == nil {
		return nil, errors.New("certificate template without a serial number")
	}
	if template.SubjectKeyId == nil {
		ski, err := subjectKeyID(pub)
		if err != nil {
			return nil, err
		}
		template.SubjectKeyId = ski
	}
	der, err := x509.CreateCertificate(rand.Reader, template, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse the certificate just made: %w", err)
	}
	return cert, nil
}

// subjectKeyID is the SHA-1 of the subjectPublicKey bits (RFC 5280
// 4.2.1.2, method 1), or in FIPS 140-3 mode the leftmost 160 bits of their
// SHA-256 (RFC 7093 section 2): what x509util.GenerateSubjectKeyID made.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("subject key identifier: %w", err)
	}
	var spki struct {
		Algorithm        asn1.RawValue
		SubjectPublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("subject key identifier: %w", err)
	}
	if fips140.Enabled() {
		h := sha256.Sum256(spki.SubjectPublicKey.Bytes)
		return h[:20], nil
	}
	h := sha1.Sum(spki.SubjectPublicKey.Bytes) //nolint:gosec // see the import
	return h[:], nil
}
