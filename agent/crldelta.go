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
	if m == nil || !m.GetDelta() {
		return m, nil
	}
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
	keep := func(ders [][]byte, added [][]byte) [][]byte {
		out := make([][]byte, 0, len(ders)+len(added))
		for _, d := range ders {
			if len(removed) == 0 || !removed[sha256.Sum256(d)] {
				out = append(out, d)
			}
		}
		return append(out, added...)
	}
	return &meshrootv1.CRLSet{
		Crls:          keep(base.GetCrls(), m.GetCrls()),
		Intermediates: keep(base.GetIntermediates(), m.GetIntermediates()),
		Missing:       m.GetMissing(),
	}, nil
}
