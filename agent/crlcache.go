package agent

import (
	"crypto/sha256"
	"crypto/x509"
	"sync"
)

// maxCRLSigCache bounds the verified-signature cache; past it the cache
// starts over (a fleet has a few CRLs per cluster, so this is thousands
// of clusters).
const maxCRLSigCache = 1 << 14

// crlSigCache remembers which CRLs were already found signed by which CA.
// Every trust bundle message carries the whole fleet's CRL set, and
// ca-crl.pem is planned again at each one: without the cache an agent in
// a fleet of N clusters checks N ECDSA signatures per bundle change
// (N^2 across the fleet), although the set rarely changes. The key binds
// the exact CRL bytes and the exact CA certificate, and the check depends
// on nothing else (CheckSignatureFrom does not look at the time; currency
// is checked separately at every use), so a hit is as good as the check.
type crlSigCache struct {
	mu sync.Mutex
	ok map[[32]byte]struct{}
}

// checkFrom is rl.CheckSignatureFrom(issuer), answered from the cache when
// this pair was verified before. A nil cache checks every time.
func (c *crlSigCache) checkFrom(rl *x509.RevocationList, issuer *x509.Certificate) error {
	if c == nil {
		return rl.CheckSignatureFrom(issuer)
	}
	h := sha256.New()
	var n [8]byte
	for i, l := 0, uint64(len(rl.Raw)); i < 8; i++ {
		n[i] = byte(l >> (8 * i))
	}
	h.Write(n[:]) // length-prefixed, so no two pairs share a key
	h.Write(rl.Raw)
	h.Write(issuer.Raw)
	var k [32]byte
	h.Sum(k[:0])
	c.mu.Lock()
	_, hit := c.ok[k]
	c.mu.Unlock()
	if hit {
		return nil
	}
	if err := rl.CheckSignatureFrom(issuer); err != nil {
		return err
	}
	c.mu.Lock()
	if c.ok == nil || len(c.ok) >= maxCRLSigCache {
		c.ok = map[[32]byte]struct{}{}
	}
	c.ok[k] = struct{}{}
	c.mu.Unlock()
	return nil
}
