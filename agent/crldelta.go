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
type crlStream struct {
	set *meshrootv1.CRLSet
	// crlKeys and interKeys are the keys of set's CRLs and
	// intermediates, in order; nil until needed.
	crlKeys, interKeys [][32]byte
}

// apply returns the whole set m describes (ApplyCRLDelta), and holds it
// as the stream's set. On an error the stream is left as it was.
func (s *crlStream) apply(m *meshrootv1.CRLSet) (*meshrootv1.CRLSet, error) {
	if m == nil || !m.GetDelta() {
		s.set, s.crlKeys, s.interKeys = m, nil, nil
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
	crls, crlKeys := keep(base.GetCrls(), s.crlKeys, removed, m.GetCrls())
	inters, interKeys := keep(base.GetIntermediates(), s.interKeys, removed, m.GetIntermediates())
	s.set = &meshrootv1.CRLSet{Crls: crls, Intermediates: inters, Missing: m.GetMissing()}
	s.crlKeys, s.interKeys = crlKeys, interKeys
	return s.set, nil
}

// keep returns ders (whose keys are keys, or nil when not computed)
// without the removed ones, with added appended, and the result's keys
// (nil when keys is).
func keep(ders [][]byte, keys [][32]byte, removed map[[32]byte]bool, added [][]byte) ([][]byte, [][32]byte) {
	out := make([][]byte, 0, len(ders)+len(added))
	var outKeys [][32]byte
	if keys != nil {
		outKeys = make([][32]byte, 0, len(ders)+len(added))
	}
	for i, d := range ders {
		if len(removed) > 0 && removed[keys[i]] {
			continue
		}
		out = append(out, d)
		if keys != nil {
			outKeys = append(outKeys, keys[i])
		}
	}
	out = append(out, added...)
	if keys != nil {
		outKeys = append(outKeys, derKeys(added)...)
	}
	return out, outKeys
}

// derKeys are the SHA-256 of each of ders.
func derKeys(ders [][]byte) [][32]byte {
	out := make([][32]byte, len(ders))
	for i, d := range ders {
		out[i] = sha256.Sum256(d)
	}
	return out
}
