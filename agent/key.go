package agent

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"

	"go.step.sm/crypto/pemutil"
)

// parsePrivateKey parses an unencrypted PEM private key (PKCS#8, PKCS#1 or SEC 1).
func parsePrivateKey(pemData []byte) (any, error) { return pemutil.ParseKey(pemData) }

// newCSR is the intermediate's certificate request: the cluster's name as
// its common name, no SANs, signed by key.
func newCSR(cluster string, key crypto.Signer) (*x509.CertificateRequest, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cluster}}, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR: %w", err)
	}
	return x509.ParseCertificateRequest(der)
}
