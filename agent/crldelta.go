package agent

import (
	"crypto/sha256"
	"errors"
	"fmt"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
)

// maxCRLRemoved bounds the removals one delta may carry.
const maxCRLRemoved = 1 << 17

// ApplyCRLDelta returns the whole CRL set that m describes: m itself when
// it is whole, or base (the set this watch stream delivered so far) with
// m's removals taken out and its additions appended. The order of what
// stays is kept, so ca-crl.pem does not change for a change elsewhere.
func ApplyCRLDelta(base, m *meshrootv1.CRLSet) (*meshrootv1.CRLSet, error) {
	s := crlStream{set: base}
	return s.apply(m)
}

// crlStream is the whole CRL set one watch stream delivered so far, with
// the SHA-256 of each entry (the keys a delta removes by) once a delta
// removed one. The keys are carried from set to set, so a removal costs a
// hash of what was added since, not of the whole set: at 1,000 clusters
// every renewal in the fleet removes a CRL and an intermediate, and hashing
// all 2,000 entries again cost every agent ~1 MB of SHA-256.
//
// With the agent's caches (crls and certs), the stream also carries each
// entry's parsed form from set to set, and hands the caches every new set
// already resolved (crlCache.setEntries, certCache.intermediates): a change
// costs a lookup of what it added, not of the fleet's ~2,000 CRLs and
// intermediates by their DER.
type crlStream struct {
	set *meshrootv1.CRLSet
	// crlKeys and interKeys are the keys of set's CRLs and
	// intermediates, in order; nil until needed.
	crlKeys, interKeys [][32]byte

	crls  *crlCache  // nil: nothing is resolved
	certs *certCache // nil: nothing is resolved
	// ents and cas are set's CRLs and intermediates as the caches hold
	// them, in order (nil where one does not parse); nil when not
	// resolved.
	ents []*crlEntry
	cas  []*crlCA
}

// apply returns the whole set m describes (ApplyCRLDelta), and holds it
// as the stream's set. On an error the stream is left as it was.
func (s *crlStream) apply(m *meshrootv1.CRLSet) (*meshrootv1.CRLSet, error) {
	if m == nil || !m.GetDelta() {
		s.set, s.crlKeys, s.interKeys = m, nil, nil
		s.ents, s.cas = nil, nil
		s.resolve(nil, nil)
		return m, nil
	}
	base := s.set
	if base == nil {
		return nil, errors.New("the server sent a CRL set delta before the whole set on this stream")
	}
	if len(m.GetRemoved()) > maxCRLRemoved {
		return nil, fmt.Errorf("CRL set delta removes %d entries, more than %d", len(m.GetRemoved()), maxCRLRemoved)
	}
	removed := make(map[[32]byte]bool, len(m.GetRemoved()))
	for _, k := range m.GetRemoved() {
		if len(k) != sha256.Size {
			return nil, fmt.Errorf("CRL set delta: a removed key of %d bytes, want %d", len(k), sha256.Size)
		}
		removed[[32]byte(k)] = true
	}
	if len(removed) > 0 && s.crlKeys == nil {
		s.crlKeys, s.interKeys = derKeys(base.GetCrls()), derKeys(base.GetIntermediates())
	}
	crlIdx := kept(base.GetCrls(), s.crlKeys, removed)
	interIdx := kept(base.GetIntermediates(), s.interKeys, removed)
	added, addedInters := len(m.GetCrls()), len(m.GetIntermediates())
	s.set = &meshrootv1.CRLSet{
		Crls:          append(carry(base.GetCrls(), crlIdx, added), m.GetCrls()...),
		Intermediates: append(carry(base.GetIntermediates(), interIdx, addedInters), m.GetIntermediates()...),
		Missing:       m.GetMissing(),
	}
	if s.crlKeys != nil {
		s.crlKeys = append(carry(s.crlKeys, crlIdx, added), derKeys(m.GetCrls())...)
		s.interKeys = append(carry(s.interKeys, interIdx, addedInters), derKeys(m.GetIntermediates())...)
	}
	var ents []*crlEntry
	var cas []*crlCA
	if s.ents != nil {
		ents, cas = carry(s.ents, crlIdx, added), carry(s.cas, interIdx, addedInters)
	}
	s.resolve(ents, cas)
	return s.set, nil
}

// resolve makes s.ents and s.cas those of s.set, given those of the
// entries kept from the last set (a prefix of it; nil: none resolved),
// and hands the set to the caches resolved. Without caches it does
// nothing.
func (s *crlStream) resolve(ents []*crlEntry, cas []*crlCA) {
	if s.crls == nil || s.certs == nil || s.set == nil {
		return
	}
	crls, inters := s.set.GetCrls(), s.set.GetIntermediates()
	for _, der := range crls[len(ents):] {
		e, _ := s.crls.parseEntry(der) // nil when it does not parse
		ents = append(ents, e)
	}
	for _, der := range inters[len(cas):] {
		c, _ := s.certs.parse(der) // nil when it does not parse
		cas = append(cas, c)
	}
	s.ents, s.cas = ents, cas
	s.crls.resolved(s.set, ents)
	s.certs.resolved(s.set, cas)
}

// kept returns the indices of ders (whose keys are keys, or nil when not
// computed) that removed does not name, or nil when it names none of them.
func kept(ders [][]byte, keys [][32]byte, removed map[[32]byte]bool) []int {
	if len(removed) == 0 {
		return nil
	}
	out := make([]int, 0, len(ders))
	for i := range ders {
		if removed[keys[i]] {
			continue
		}
		out = append(out, i)
	}
	if len(out) == len(ders) {
		return nil
	}
	return out
}

// carry returns the elements of xs at idx, or all of them when idx is
// nil, in a new slice with room for extra more; xs itself when it keeps
// them all and gains none. A root's prepare or rollback changes a CRL or
// two of the fleet's ~2,000 and none of its ~1,000 intermediates: copying
// the lists it leaves as they were was a tenth of the agents' CPU per
// change in bench-fleet. Nothing changes a list once made, so sharing one
// is safe; an unchanged list also tells the plan (align) that nothing
// changed.
func carry[T any](xs []T, idx []int, extra int) []T {
	if idx != nil {
		return pick(xs, idx, extra)
	}
	if extra == 0 {
		return xs
	}
	out := make([]T, len(xs), len(xs)+extra)
	copy(out, xs)
	return out
}

// pick returns the elements of xs at idx, in a new slice with room for
// extra more.
func pick[T any](xs []T, idx []int, extra int) []T {
	out := make([]T, len(idx), len(idx)+extra)
	for i, j := range idx {
		out[i] = xs[j]
	}
	return out
}

// derKeys are the SHA-256 of each of ders.
func derKeys(ders [][]byte) [][32]byte {
	out := make([][32]byte, len(ders))
	for i, d := range ders {
		out[i] = sha256.Sum256(d)
	}
	return out
}
