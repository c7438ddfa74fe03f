package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"testing"
	"time"
)

// TestCRLCacheParsesOnce: the same DER is parsed once and found again;
// another DER is parsed; junk is an error and not kept; a nil cache
// parses every time.
func TestCRLCacheParsesOnce(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	issuer := testCert(t)
	issuer.PublicKey = k.Public() // CreateRevocationList checks only the key matches the signer
	mk := func(n int64) []byte {
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(n), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour)},
			&x509.Certificate{Subject: issuer.Subject, SubjectKeyId: []byte{1}, KeyUsage: x509.KeyUsageCRLSign, PublicKey: k.Public()}, k)
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
	var none *crlCache
	if r, err := none.parse(a); err != nil || r == r1 {
		t.Errorf("nil cache: %v, shared %v", err, r == r1)
	}
}
