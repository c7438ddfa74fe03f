package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"
)

func newTestCRLIssuer(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func newTestCRL(t *testing.T, issuer *x509.Certificate, key *ecdsa.PrivateKey) *x509.RevocationList {
	t.Helper()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(time.Now().UnixNano()), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(365 * 24 * time.Hour),
	}, issuer, key)
	if err != nil {
		t.Fatal(err)
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	return rl
}

// TestCRLSigCacheRemembersOnlyVerifiedPairs: a verified (CRL, CA) pair is
// answered from the cache; a CRL checked against a CA that did not sign
// it fails, before and after the right pair is cached, and is not cached.
func TestCRLSigCacheRemembersOnlyVerifiedPairs(t *testing.T) {
	a, aKey := newTestCRLIssuer(t, "a")
	b, _ := newTestCRLIssuer(t, "b")
	rl := newTestCRL(t, a, aKey)
	var c crlSigCache
	if err := c.checkFrom(rl, b); err == nil {
		t.Fatal("a CRL of a checked against b: no error")
	}
	if len(c.ok) != 0 {
		t.Fatalf("a failed check was cached: %d entries", len(c.ok))
	}
	if err := c.checkFrom(rl, a); err != nil {
		t.Fatalf("a CRL of a checked against a: %v", err)
	}
	if len(c.ok) != 1 {
		t.Fatalf("verified pair not cached: %d entries", len(c.ok))
	}
	if err := c.checkFrom(rl, a); err != nil {
		t.Fatalf("cached pair: %v", err)
	}
	if err := c.checkFrom(rl, b); err == nil {
		t.Fatal("after caching (CRL, a), (CRL, b) passed")
	}
	// A CRL with a's issuer name but not a's signature is refused.
	other, otherKey := newTestCRLIssuer(t, "a")
	forged := newTestCRL(t, other, otherKey)
	if err := c.checkFrom(forged, a); err == nil {
		t.Fatal("a CRL signed by another key under a's name passed against a")
	}
}

// TestCRLSigCacheBounded: the cache starts over once it holds
// maxCRLSigCache entries instead of growing.
func TestCRLSigCacheBounded(t *testing.T) {
	a, aKey := newTestCRLIssuer(t, "a")
	c := crlSigCache{ok: map[[32]byte]struct{}{}}
	for i := range maxCRLSigCache {
		c.ok[[32]byte{byte(i), byte(i >> 8), 0xff}] = struct{}{}
	}
	if err := c.checkFrom(newTestCRL(t, a, aKey), a); err != nil {
		t.Fatal(err)
	}
	if len(c.ok) != 1 {
		t.Fatalf("cache holds %d entries after passing its bound, want 1 (started over)", len(c.ok))
	}
}

// TestPlanCRLFileWithCacheSameAsWithout: the agent's cached planning gives
// the plan PlanCRLFile gives, on the first message and on the next.
func TestPlanCRLFileWithCacheSameAsWithout(t *testing.T) {
	a, aKey := newTestCRLIssuer(t, "a")
	b, bKey := newTestCRLIssuer(t, "b")
	now := time.Now()
	crls := [][]byte{newTestCRL(t, a, aKey).Raw, newTestCRL(t, b, bKey).Raw}
	want := PlanCRLFile([]*x509.Certificate{a, b}, crls, now)
	if want.PEM == nil {
		t.Fatalf("no plan: missing %v", want.Missing)
	}
	var c crlSigCache
	for range 2 {
		got := planCRLFile([]*x509.Certificate{a, b}, crls, now, &c)
		if string(got.PEM) != string(want.PEM) || len(got.Missing) != 0 {
			t.Fatalf("cached plan differs: %d bytes, missing %v", len(got.PEM), got.Missing)
		}
	}
	// Without b's CRL, b is missing, cached or not.
	if got := planCRLFile([]*x509.Certificate{a, b}, crls[:1], now, &c); got.PEM != nil || len(got.Missing) != 1 {
		t.Fatalf("b's CRL left out: plan %d bytes, missing %v", len(got.PEM), got.Missing)
	}
}
