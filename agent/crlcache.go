package agent

import (
	"crypto/x509"
	"encoding/pem"
	"sync"
)

// maxCachedCRLs bounds the parsed CRLs an agent keeps: the fleet's set
// (one per root, one per cluster intermediate, and the last of each
// superseded intermediate while current) and the next one. It must hold a
// whole set: below that, every reconcile would parse and verify the whole
// set again (a 1,000-cluster fleet has over 1,000 CRLs, twice that during
// a rotation). An empty cluster CRL parses to about 1 KiB. The DER itself
// is the key: a lookup hashes it with the map's hash, several times
// cheaper than the SHA-256 it used to compute, and a reconcile makes
// several lookups per CRL of the fleet.
const maxCachedCRLs = 8192

// crlCache keeps parsed CRLs by their DER. Every reconcile
// looks at the fleet's whole CRL set several times (planning ca-crl.pem,
// finding the cluster's own CRL, reporting what the file holds) and nearly
// all of it is unchanged from the last one; a root CRL with 10,000 entries
// takes tens of milliseconds to parse and one hash to find again. A nil
// cache parses every time.
type crlCache struct {
	mu sync.Mutex
	m  map[string]*x509.RevocationList
	// checked holds the result of checking each (CRL, issuer) pair's
	// signature, failures too: an ECDSA verification on every reconcile
	// cost more than parsing once, and a cluster's successive
	// intermediates share their subject name, so after a rotation every
	// plan tried each cluster's CRLs against the other intermediate and
	// failed again (300 failed verifications per plan at 300 clusters).
	// Keyed by CRL, then by the issuer's DER (looked up without copying it).
	checked map[*x509.RevocationList]map[string]error
	// pemOf holds the PEM block of each CRL the cache holds, as
	// ca-crl.pem is written: re-encoding the fleet's CRLs for every plan
	// cost about as much as decoding them.
	pemOf map[*x509.RevocationList][]byte
	// pemSrc and pemDERs remember the last ca-crl.pem decoded: a
	// reconcile reads the Secret's file several times (planning, the
	// report) and decoding 1,000 CRLs' PEM takes ~2 ms each time.
	pemSrc  string
	pemDERs [][]byte
}

// pemCRLs returns the DER of every X509 CRL block in data (shared: callers
// must not change it).
func (c *crlCache) pemCRLs(data []byte) [][]byte {
	if c == nil {
		return pemCRLs(data)
	}
	c.mu.Lock()
	if c.pemDERs != nil && c.pemSrc == string(data) {
		ders := c.pemDERs
		c.mu.Unlock()
		return ders
	}
	c.mu.Unlock()
	ders := pemCRLs(data)
	if ders == nil {
		ders = [][]byte{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pemSrc, c.pemDERs = string(data), ders
	return ders
}

// pemBlock returns rl (whose DER is der) as a PEM block, encoded once for
// a CRL from this cache.
func (c *crlCache) pemBlock(rl *x509.RevocationList, der []byte) []byte {
	if c == nil {
		return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
	}
	c.mu.Lock()
	b, ok := c.pemOf[rl]
	c.mu.Unlock()
	if ok {
		return b
	}
	b = pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[string(der)] == rl {
		if c.pemOf == nil {
			c.pemOf = map[*x509.RevocationList][]byte{}
		}
		c.pemOf[rl] = b
	}
	return b
}

// checkSignature is rl.CheckSignatureFrom(issuer), its result remembered
// for a CRL from this cache.
func (c *crlCache) checkSignature(rl *x509.RevocationList, issuer *x509.Certificate) error {
	if c == nil {
		return rl.CheckSignatureFrom(issuer)
	}
	c.mu.Lock()
	res, ok := c.checked[rl][string(issuer.Raw)]
	c.mu.Unlock()
	if ok {
		return res
	}
	res = rl.CheckSignatureFrom(issuer)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[string(rl.Raw)] == rl { // only CRLs the cache holds: their pointers stay unique
		if c.checked == nil {
			c.checked = map[*x509.RevocationList]map[string]error{}
		}
		if c.checked[rl] == nil {
			c.checked[rl] = map[string]error{}
		}
		c.checked[rl][string(issuer.Raw)] = res
	}
	return res
}

// parse returns der parsed, from the cache when it was parsed before.
// The result is shared: callers must not change it.
func (c *crlCache) parse(der []byte) (*x509.RevocationList, error) {
	if c == nil {
		return x509.ParseRevocationList(der)
	}
	c.mu.Lock()
	rl, ok := c.m[string(der)]
	c.mu.Unlock()
	if ok {
		return rl, nil
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedCRLs {
		c.m = map[string]*x509.RevocationList{} // a new fleet set: start over
		c.checked, c.pemOf = nil, nil
	}
	c.m[string(der)] = rl
	return rl, nil
}
