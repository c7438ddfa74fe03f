package agent

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"slices"
	"testing"
	"time"
)

// TestCRLCacheParsesOnce: the same DER is parsed once and found again;
// another DER is parsed; junk is an error and not kept; a nil cache
// parses every time.
func TestCRLCacheParsesOnce(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "issuer"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	issuer, _ := x509.ParseCertificate(der)
	mk := func(n int64) []byte {
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(n), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour)},
			issuer, k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	a, b := mk(1), mk(2)
	var c crlCache
	r1, err := c.parse(a)
	if err != nil {
		t.Fatal(err)
	}
	if r2, _ := c.parse(append([]byte(nil), a...)); r2 != r1 {
		t.Error("the same CRL was parsed again")
	}
	if r3, _ := c.parse(b); r3 == r1 || r3.Number.Int64() != 2 {
		t.Errorf("another CRL: %v", r3.Number)
	}
	if _, err := c.parse([]byte{1, 2, 3}); err == nil || len(c.m) != 2 {
		t.Errorf("junk: %v, %d cached", err, len(c.m))
	}
	// Signatures: the result is remembered, a failure too (a cluster's
	// successive intermediates share a name: each plan tries a CRL against
	// both), and a failure stays a failure.
	if err := c.checkSignature(r1, issuer); err != nil {
		t.Errorf("checkSignature by its issuer: %v", err)
	}
	if res, ok := c.checked[r1][string(issuer.Raw)]; !ok || res != nil {
		t.Errorf("success remembered: %v, %v", ok, res)
	}
	other := testCert(t)
	for range 2 {
		if err := c.checkSignature(r1, other); err == nil {
			t.Error("a CRL checked out against another certificate")
		}
	}
	if res, ok := c.checked[r1][string(other.Raw)]; !ok || res == nil {
		t.Errorf("failure remembered: %v, %v", ok, res)
	}
	if len(c.checked) != 1 || len(c.checked[r1]) != 2 {
		t.Errorf("checks remembered for %d CRLs (%d pairs), want 1 CRL, 2 pairs", len(c.checked), len(c.checked[r1]))
	}
	var none *crlCache
	if r, err := none.parse(a); err != nil || r == r1 {
		t.Errorf("nil cache: %v, shared %v", err, r == r1)
	}
}

// TestCRLCachePEMMemo: the decoded ca-crl.pem is reused only for the same
// content: another file is decoded afresh, and going back decodes the
// first again; a CRL's PEM block is what pem.EncodeToMemory makes.
func TestCRLCachePEMMemo(t *testing.T) {
	block := func(b []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: b}) }
	a := append(block([]byte("one")), block([]byte("two"))...)
	b := block([]byte("three"))
	var c crlCache
	for i, tc := range []struct {
		file []byte
		want []string
	}{{a, []string{"one", "two"}}, {a, []string{"one", "two"}}, {b, []string{"three"}}, {a, []string{"one", "two"}}, {nil, nil}} {
		var got []string
		for _, d := range c.pemCRLs(append([]byte(nil), tc.file...)) {
			got = append(got, string(d))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("read %d: %q, want %q", i, got, tc.want)
		}
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "issuer"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	issuer, _ := x509.ParseCertificate(der)
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour)}, issuer, k)
	if err != nil {
		t.Fatal(err)
	}
	rl, err := c.parse(crl)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if got := c.pemBlock(rl, crl); !bytes.Equal(got, block(crl)) {
			t.Fatalf("pemBlock = %q, want %q", got, block(crl))
		}
	}
}
