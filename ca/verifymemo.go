package ca

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"hash"
	"sync"
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
