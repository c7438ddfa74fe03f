package agent

import (
	"bytes"
	"hash/maphash"
)

// derHolder is what a derIndex holds: something parsed from a DER
// encoding, which it still refers to.
type derHolder interface {
	der() []byte
}

// derIndex finds what the agent parsed from a DER encoding (the fleet's
// intermediates, its CRLs) by a seeded 64-bit hash of the DER
// (hash/maphash, as fast as a map's own hash of a string key). Keyed by
// the DER itself, a map holds a copy of every key beside the one the CRL
// set holds: at 1,000 clusters ~0.6 MB of intermediates and ~0.3 MB of
// CRLs per agent, and a thousand objects each for every collection to
// mark (bench-fleet's 1,000 in-process agents). A hit is checked byte for
// byte; a collision is a miss, and the later value takes the slot. (A
// SHA-256 key made a whole set's lookups 2.2x slower:
// BenchmarkCRLReconcileFleet.) The caller locks.
type derIndex[T derHolder] struct {
	m    map[uint64]T
	seed maphash.Seed // set with m
}

// get returns der's value, if held.
func (x *derIndex[T]) get(der []byte) (T, bool) {
	var zero T
	if x.m == nil { // no seed yet: a zero seed cannot hash
		return zero, false
	}
	if v, ok := x.m[maphash.Bytes(x.seed, der)]; ok && bytes.Equal(v.der(), der) {
		return v, true
	}
	return zero, false
}

// put holds v (parsed from der); a full index (limit values) starts over,
// as a new fleet set does.
func (x *derIndex[T]) put(der []byte, v T, limit int) {
	if x.m == nil || len(x.m) >= limit {
		x.m, x.seed = map[uint64]T{}, maphash.MakeSeed()
	}
	x.m[maphash.Bytes(x.seed, der)] = v
}

// len is how many values the index holds.
func (x *derIndex[T]) len() int { return len(x.m) }

func (c *crlCA) der() []byte    { return c.raw }
func (e *crlEntry) der() []byte { return e.rl.Raw }
