package agent

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"hash/maphash"
	"math/big"
	"strings"
	"testing"
	"time"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
)

// TestCertCacheCRLSet: a CRL set's intermediates are parsed once and
// found again in the next message's set; a set with junk is refused with
// the certificate's position, as wire.CRLSetFromProto refuses it.
func TestCertCacheCRLSet(t *testing.T) {
	mk := func(cn string) []byte {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
			IsCA: true, BasicConstraintsValid: true}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	a, b := mk("a"), mk("b")
	var c certCache
	first, err := c.intermediates(&meshrootv1.CRLSet{Intermediates: [][]byte{a}, Crls: [][]byte{{1}}, Missing: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 1 || !strings.HasPrefix(first[0].name(), "CN=a ") {
		t.Fatalf("first set = %+v", first)
	}
	next, err := c.intermediates(&meshrootv1.CRLSet{Intermediates: [][]byte{append([]byte(nil), a...), b}})
	if err != nil {
		t.Fatal(err)
	}
	if next[0] != first[0] {
		t.Error("an intermediate already parsed was parsed again")
	}
	if got := next[1]; !strings.HasPrefix(got.name(), "CN=b ") || !bytes.Equal(got.raw, b) || got.cert != nil {
		t.Errorf("second intermediate = %q (kept parsed: %v), want b, not kept parsed", got.name(), got.cert != nil)
	}
	if _, err := c.intermediates(&meshrootv1.CRLSet{Intermediates: [][]byte{a, []byte("junk")}}); err == nil || !strings.Contains(err.Error(), "certificate 2") {
		t.Errorf("junk intermediate: %v, want an error naming certificate 2", err)
	}
	// Kept by hash, answered only for the same bytes: an entry under a's
	// hash that is not a (a collision, planted) is not a's.
	c.mu.Lock()
	c.m.m[maphash.Bytes(c.m.seed, a)] = next[1]
	c.mu.Unlock()
	if got, err := c.parse(a); err != nil || !bytes.Equal(got.raw, a) || !strings.HasPrefix(got.name(), "CN=a ") {
		t.Errorf("a under a hash holding b: got %q, %v", got.name(), err)
	}
	var none *certCache
	if got, err := none.parse(a); err != nil || got.cert == nil || got.cert.Subject.CommonName != "a" {
		t.Errorf("nil cache: %v, %v", got, err)
	}
}
