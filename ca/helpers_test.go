package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/meshroot/meshroot/keys"
)

// testRoot makes a self-signed root of key type kt.
func testRoot(t testing.TB, kt keys.KeyType) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := kt.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := NewRoot(key, RootOptions{TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// testAuthority makes an authority over a fresh P-256 root.
func testAuthority(t testing.TB, p Policy) (*Authority, *x509.Certificate) {
	t.Helper()
	root, key := testRoot(t, keys.ECP256)
	a, err := NewAuthority([]*x509.Certificate{root}, key, p)
	if err != nil {
		t.Fatal(err)
	}
	return a, root
}

// testCSR makes a CSR for key with the given template fields.
func testCSR(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) *x509.CertificateRequest {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{Subject: pkix.Name{CommonName: "east"}}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func p256(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signCA signs a CA certificate for pub under parent with the given path
// length (-1: unset) and key usage.
func signCA(t testing.TB, parent *x509.Certificate, parentKey crypto.Signer, pub crypto.PublicKey, cn string, pathLen int, ku x509.KeyUsage, notAfter time.Time) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              ku,
		MaxPathLen:            pathLen,
		MaxPathLenZero:        pathLen == 0,
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
