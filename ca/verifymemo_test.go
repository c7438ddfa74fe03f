package ca

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/keys"
)

// TestVerifyCertsMemo checks that a remembered pass never stands in for a
// check that would fail: not after the intermediate expires, not for a set
// with other bytes, not for a set that failed before.
func TestVerifyCertsMemo(t *testing.T) {
	now := time.Now()
	good, _ := testCACerts(t)
	k := certsKey(good)
	if verifiedCerts.passed(k, now) {
		t.Fatal("a set never checked counts as passed")
	}
	if err := good.VerifyCerts(now); err != nil {
		t.Fatalf("valid cacerts refused: %v", err)
	}
	if !verifiedCerts.passed(k, now) {
		t.Fatal("a pass was not remembered")
	}
	// The same certificates, parsed again (as an agent reads its Secret),
	// hit the memo: the key is their bytes, not the pointers.
	again := &CACerts{Cert: reparse(t, good.Cert), Chain: []*x509.Certificate{reparse(t, good.Chain[0]), reparse(t, good.Chain[1])}, Roots: []*x509.Certificate{reparse(t, good.Roots[0])}}
	if certsKey(again) != k {
		t.Fatal("the same certificates, parsed again, hash differently")
	}

	// Expiry is still checked: the remembered span ends with the
	// intermediate.
	if err := good.VerifyCerts(good.Cert.NotAfter.Add(time.Second)); err == nil || !strings.Contains(err.Error(), "not valid now") {
		t.Fatalf("after the intermediate's expiry: VerifyCerts = %v, want 'not valid now'", err)
	}
	if err := good.VerifyCerts(good.Cert.NotBefore.Add(-time.Second)); err == nil {
		t.Fatal("before the intermediate's start: VerifyCerts passed")
	}

	// A root that did not sign the chain, in place of the real one: other
	// bytes, so the full check runs and refuses it.
	otherRoot, _ := testRoot(t, keys.ECP256)
	swapped := &CACerts{Cert: good.Cert, Chain: []*x509.Certificate{good.Cert, otherRoot}, Roots: []*x509.Certificate{otherRoot}}
	if err := swapped.VerifyCerts(now); err == nil {
		t.Fatal("a chain to a root that did not sign it passed")
	}
	// Nor does dropping the issuing root from a remembered set's roots.
	noRoot := &CACerts{Cert: good.Cert, Chain: good.Chain, Roots: []*x509.Certificate{otherRoot}}
	if err := noRoot.VerifyCerts(now); err == nil || !strings.Contains(err.Error(), "not in root-cert.pem") {
		t.Fatalf("roots without the chain's root: VerifyCerts = %v", err)
	}
	// Failures are not remembered.
	for range 2 {
		if verifiedCerts.passed(certsKey(noRoot), now) {
			t.Fatal("a failed set counts as passed")
		}
		if err := noRoot.VerifyCerts(now); err == nil {
			t.Fatal("a failed set passed the second time")
		}
	}
}

// TestVerifyCertsChainAcrossRootChanges: a chain that verified to its
// root is not checked again when the bundle's other roots change (a
// rotation's prepare adds one, a rollback removes it), and that memo
// never stands in for the checks of the roots themselves: the chain's
// root must be among them, and each must be a self-signed CA.
func TestVerifyCertsChainAcrossRootChanges(t *testing.T) {
	now := time.Now()
	good, _ := testCACerts(t)
	root := good.Roots[0]
	next, _ := testRoot(t, keys.ECP256)
	before := chainChecks.Load()
	if err := good.VerifyCerts(now); err != nil {
		t.Fatalf("valid cacerts refused: %v", err)
	}
	if got := chainChecks.Load() - before; got != 1 {
		t.Fatalf("the chain was checked %d times, want 1", got)
	}
	prepared := &CACerts{Cert: good.Cert, Chain: good.Chain, Roots: []*x509.Certificate{root, next}}
	rolledBack := &CACerts{Cert: good.Cert, Chain: good.Chain, Roots: []*x509.Certificate{root}}
	for _, c := range []*CACerts{prepared, rolledBack, prepared} {
		if err := c.VerifyCerts(now); err != nil {
			t.Fatalf("with roots %d: %v", len(c.Roots), err)
		}
	}
	if got := chainChecks.Load() - before; got != 1 {
		t.Fatalf("the chain was checked %d times across root changes, want 1", got)
	}
	// The chain's root left the bundle: refused, memo or not.
	gone := &CACerts{Cert: good.Cert, Chain: good.Chain, Roots: []*x509.Certificate{next}}
	if err := gone.VerifyCerts(now); err == nil || !strings.Contains(err.Error(), "not in root-cert.pem") {
		t.Fatalf("the chain's root not in the bundle: VerifyCerts = %v", err)
	}
	// A certificate among the roots that is not self-signed: refused.
	bad := &CACerts{Cert: good.Cert, Chain: good.Chain, Roots: []*x509.Certificate{root, good.Cert}}
	if err := bad.VerifyCerts(now); err == nil || !strings.Contains(err.Error(), "not a self-signed CA") {
		t.Fatalf("an intermediate among the roots: VerifyCerts = %v", err)
	}
	// Past the chain's validity the memo holds nothing.
	if err := prepared.VerifyCerts(good.Cert.NotAfter.Add(time.Second)); err == nil {
		t.Fatal("after the intermediate's expiry the chain passed")
	}
}

// TestVerifyCertsMemoBounded checks that the memo does not grow past its
// bound when every check is of a new set (the server's case).
func TestVerifyCertsMemoBounded(t *testing.T) {
	good, _ := testCACerts(t)
	now := time.Now()
	m := certsMemo{ok: map[[32]byte]validity{}}
	for i := range certsMemoMax + 10 {
		var k [32]byte
		k[0], k[1] = byte(i), byte(i>>8)
		m.remember(k, good, now)
		if m.len() > certsMemoMax {
			t.Fatalf("memo holds %d sets, bound %d", m.len(), certsMemoMax)
		}
	}
	if m.len() == 0 {
		t.Fatal("the memo remembered nothing")
	}
	// A pass at a time the set's span does not cover is not remembered.
	var k [32]byte
	k[0] = 0xff
	k[2] = 1
	m.remember(k, good, good.Cert.NotAfter.Add(time.Hour))
	if m.passed(k, good.Cert.NotAfter.Add(time.Hour)) {
		t.Fatal("a pass outside the set's validity was remembered")
	}
}

func reparse(t *testing.T, c *x509.Certificate) *x509.Certificate {
	t.Helper()
	p, err := x509.ParseCertificate(c.Raw)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// BenchmarkCACertsVerify is an agent's check of its cacerts at a bundle
// change: the same certificates as last time (memo), and a set never seen
// (the full check).
func BenchmarkCACertsVerify(b *testing.B) {
	a, root := testAuthority(b, Policy{})
	key := p256(b)
	now := time.Now()
	issue := func() *CACerts {
		cert, err := a.SignIntermediate(IntermediateRequest{Cluster: "east", TrustDomain: "example.org", CSR: testCSR(b, key, nil)})
		if err != nil {
			b.Fatal(err)
		}
		return &CACerts{Cert: cert, Key: key, Chain: []*x509.Certificate{cert, root}, Roots: []*x509.Certificate{root}}
	}
	b.Run("same", func(b *testing.B) {
		cc := issue()
		for b.Loop() {
			if err := cc.Verify(now); err != nil {
				b.Fatal(err)
			}
		}
	})
	// A rotation's prepare at every op: the same chain, a root never
	// seen added to the bundle (its self-signature is checked; the
	// chain's signatures are not, once they verified to its root).
	b.Run("roots-changed", func(b *testing.B) {
		cc := issue()
		if err := cc.Verify(now); err != nil {
			b.Fatal(err)
		}
		next := make([]*x509.Certificate, b.N)
		for i := range next {
			next[i], _ = testRoot(b, keys.ECP256)
		}
		b.ResetTimer()
		for i := range b.N {
			c := &CACerts{Cert: cc.Cert, Key: cc.Key, Chain: cc.Chain, Roots: []*x509.Certificate{root, next[i]}}
			if err := c.Verify(now); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("new", func(b *testing.B) {
		cc := issue()
		for b.Loop() {
			forgetVerified() // every check as of a set never seen
			if err := cc.verifyCerts(now); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// forgetVerified empties the memos of chains and roots.
func forgetVerified() {
	for _, m := range []*certsMemo{&verifiedChains, &verifiedRoots} {
		m.mu.Lock()
		clear(m.ok)
		m.mu.Unlock()
	}
}
