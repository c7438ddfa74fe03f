package ca

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"hash"
	"sync"
	"sync/atomic"
	"time"
)

// certsMemo remembers the certificate sets that passed CACerts.VerifyCerts,
// so that an agent checking the same cacerts at every bundle change (twice
// per reconcile: before planning and when writing) does not repeat the
// chain's ECDSA checks and x509 path building each time.
//
// What a pass depends on is the certificates' bytes and the time. The key
// is a SHA-256 over every certificate of the set (intermediate, chain,
// roots, each length-prefixed and tagged with its place), and a pass is
// remembered with the intersection of the validity periods of all of
// them: inside it, every time check VerifyCerts makes passes as it did,
// and outside it the full check runs again. Failures are never
// remembered.
type certsMemo struct {
	mu sync.Mutex
	ok map[[sha256.Size]byte]validity
}

// validity is the span in which every certificate of a set is valid: the
// latest NotBefore and the earliest NotAfter.
type validity struct{ from, until time.Time }

func (v validity) holds(t time.Time) bool { return !t.Before(v.from) && !t.After(v.until) }

// certsMemoMax bounds the memo. An agent needs one entry per cacerts it
// holds (one, two during a rotation); the server checks each cacerts it
// issues once, so its entries are never hit again: when full, the memo
// starts over rather than keeping an eviction order.
const certsMemoMax = 4096

// verifiedCerts is the process's memo.
var verifiedCerts = certsMemo{ok: map[[sha256.Size]byte]validity{}}

// verifiedChains remembers the chains (an intermediate and cert-chain.pem)
// that x509 path building verified to the chain's own top, a self-signed
// root: the same chain verifies to any set of roots that holds that root
// (path building needs one path; more roots only offer more), so when the
// bundle's other roots change (a rotation's prepare, a rollback) the
// chain's signatures are not checked again. The roots themselves are
// checked at every call, each self-signature remembered
// (verifiedRoots): that the chain's top is among them, that each is a
// self-signed CA valid now.
var verifiedChains = certsMemo{ok: map[[sha256.Size]byte]validity{}}

// chainChecks counts the chains whose signatures were checked (tests).
var chainChecks atomic.Int64

// verifiedRoots remembers the roots whose self-signature checked.
var verifiedRoots = certsMemo{ok: map[[sha256.Size]byte]validity{}}

// chainKey hashes c's intermediate and chain (not its roots).
func chainKey(c *CACerts) [sha256.Size]byte {
	h := sha256.New()
	writeTagged(h, 'c', c.Cert.Raw)
	for _, cert := range c.Chain {
		writeTagged(h, 'p', cert.Raw)
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// rootSelfSigned is isSelfSigned(r), remembered while r is valid.
func rootSelfSigned(r *x509.Certificate, now time.Time) bool {
	h := sha256.New()
	writeTagged(h, 's', r.Raw)
	var k [sha256.Size]byte
	h.Sum(k[:0])
	if verifiedRoots.passed(k, now) {
		return true
	}
	if !isSelfSigned(r) {
		return false
	}
	verifiedRoots.remember(k, &CACerts{Cert: r}, now)
	return true
}

// certsKey hashes the certificate set of c.
func certsKey(c *CACerts) [sha256.Size]byte {
	h := sha256.New()
	add := func(tag byte, certs ...*x509.Certificate) {
		for _, cert := range certs {
			writeTagged(h, tag, cert.Raw)
		}
	}
	add('c', c.Cert)
	add('p', c.Chain...)
	add('r', c.Roots...)
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// writeTagged writes tag, len(b) and b, so that no two different sets
// hash the same bytes.
func writeTagged(h hash.Hash, tag byte, b []byte) {
	var hdr [5]byte
	hdr[0] = tag
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(b)))
	h.Write(hdr[:])
	h.Write(b)
}

// setValidity is the validity span of every certificate of c.
func setValidity(c *CACerts) validity {
	v := validity{from: c.Cert.NotBefore, until: c.Cert.NotAfter}
	for _, list := range [][]*x509.Certificate{c.Chain, c.Roots} {
		for _, cert := range list {
			if cert.NotBefore.After(v.from) {
				v.from = cert.NotBefore
			}
			if cert.NotAfter.Before(v.until) {
				v.until = cert.NotAfter
			}
		}
	}
	return v
}

// passed reports whether the set with key k passed at a time its whole
// validity span covers now.
func (m *certsMemo) passed(k [sha256.Size]byte, now time.Time) bool {
	m.mu.Lock()
	v, ok := m.ok[k]
	m.mu.Unlock()
	return ok && v.holds(now)
}

// remember records that c, with key k, passed at now. A set some of whose
// certificates are not valid at now (a cross certificate x509 path
// building went around) is not remembered: its span would not cover now.
func (m *certsMemo) remember(k [sha256.Size]byte, c *CACerts, now time.Time) {
	v := setValidity(c)
	if !v.holds(now) {
		return
	}
	m.mu.Lock()
	if len(m.ok) >= certsMemoMax {
		clear(m.ok)
	}
	m.ok[k] = v
	m.mu.Unlock()
}

// len is how many sets the memo holds.
func (m *certsMemo) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.ok)
}
