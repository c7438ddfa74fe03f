package server

import (
	"crypto/sha256"
	"slices"
	"sync"
	"sync/atomic"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
)

// CRLKeys are the SHA-256 of the DER of each entry of a CRL set, in the
// set's order. The hub computes them once per set, not once per watcher.
type CRLKeys struct {
	CRLs          [][32]byte
	Intermediates [][32]byte
}

func crlKeysOf(set ca.CRLSet) CRLKeys {
	k := CRLKeys{CRLs: make([][32]byte, len(set.CRLs)), Intermediates: make([][32]byte, len(set.Intermediates))}
	for i, c := range set.CRLs {
		k.CRLs[i] = sha256.Sum256(c)
	}
	for i, c := range set.Intermediates {
		k.Intermediates[i] = sha256.Sum256(c.Raw)
	}
	return k
}

func (k CRLKeys) equal(o CRLKeys) bool {
	return slices.Equal(k.CRLs, o.CRLs) && slices.Equal(k.Intermediates, o.Intermediates)
}

// maxDeltasKept bounds the deltas one CRL snapshot keeps: one per version
// that watch streams last had. Nearly every stream had the previous one;
// a stream further behind gets its delta computed for it alone.
const maxDeltasKept = 8

// CRLSnapshot is one version of the fleet's CRL set as watch streams send
// it, shared by all of them: the keys of its entries, the whole-set
// message (the first of every stream) and the deltas to it from the
// versions streams last sent, each computed once. A delta per stream
// used to cost the server two maps of the fleet's size per watcher per
// change: at 1,000 clusters a change allocated ~100 MB across the
// watchers, and every joining cluster is a change.
type CRLSnapshot struct {
	set  ca.CRLSet
	keys CRLKeys

	setsOnce     sync.Once
	crls, inters map[[32]byte]struct{} // keys, for lookups (built on first use)
	wholeOnce    sync.Once
	whole        *meshrootv1.CRLSet
	mu           sync.Mutex
	id           uint64
	deltas       map[uint64]*meshrootv1.CRLSet // by the id of the version a stream had
}

// snapshotIDs numbers the snapshots, so that deltas are kept by the
// version a stream had without holding on to that version.
var snapshotIDs atomic.Uint64

// newCRLSnapshot keys set; prev, when its keys are the same, is returned
// instead (a change of the roots alone leaves the set's snapshot).
func newCRLSnapshot(set ca.CRLSet, prev *CRLSnapshot) *CRLSnapshot {
	keys := crlKeysOf(set)
	if prev != nil && prev.keys.equal(keys) && slices.Equal(prev.set.Missing, set.Missing) {
		return prev
	}
	return &CRLSnapshot{set: set, keys: keys, id: snapshotIDs.Add(1)}
}

// Keys returns the keys of the set's entries, in its order.
func (s *CRLSnapshot) Keys() CRLKeys { return s.keys }

func (s *CRLSnapshot) lookups() (crls, inters map[[32]byte]struct{}) {
	s.setsOnce.Do(func() {
		s.crls, s.inters = make(map[[32]byte]struct{}, len(s.keys.CRLs)), make(map[[32]byte]struct{}, len(s.keys.Intermediates))
		for _, k := range s.keys.CRLs {
			s.crls[k] = struct{}{}
		}
		for _, k := range s.keys.Intermediates {
			s.inters[k] = struct{}{}
		}
	})
	return s.crls, s.inters
}

// wholeMessage is the whole set as a message (shared: not to be changed).
func (s *CRLSnapshot) wholeMessage() *meshrootv1.CRLSet {
	s.wholeOnce.Do(func() {
		m := &meshrootv1.CRLSet{Missing: s.set.Missing, Crls: s.set.CRLs}
		for _, c := range s.set.Intermediates {
			m.Intermediates = append(m.Intermediates, c.Raw)
		}
		s.whole = m
	})
	return s.whole
}

// deltaFrom is the message that takes a stream from prev's set to this
// one: what was added, in this set's order, and the keys of what was
// removed (shared: not to be changed).
func (s *CRLSnapshot) deltaFrom(prev *CRLSnapshot) *meshrootv1.CRLSet {
	s.mu.Lock()
	m, ok := s.deltas[prev.id]
	s.mu.Unlock()
	if ok {
		return m
	}
	m = &meshrootv1.CRLSet{Missing: s.set.Missing, Delta: true}
	pc, pi := prev.lookups()
	for i, k := range s.keys.CRLs {
		if _, had := pc[k]; !had {
			m.Crls = append(m.Crls, s.set.CRLs[i])
		}
	}
	for i, k := range s.keys.Intermediates {
		if _, had := pi[k]; !had {
			m.Intermediates = append(m.Intermediates, s.set.Intermediates[i].Raw)
		}
	}
	nc, ni := s.lookups()
	m.Removed = append(removedKeys(prev.keys.CRLs, nc), removedKeys(prev.keys.Intermediates, ni)...)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.deltas == nil {
		s.deltas = map[uint64]*meshrootv1.CRLSet{}
	}
	if len(s.deltas) < maxDeltasKept {
		s.deltas[prev.id] = m
	}
	return m
}

func removedKeys(before [][32]byte, now map[[32]byte]struct{}) [][]byte {
	var out [][]byte
	for _, k := range before {
		if _, ok := now[k]; !ok {
			out = append(out, append([]byte(nil), k[:]...))
		}
	}
	return out
}

// crlStream is what one watch stream has sent of the fleet's CRL set, for
// agents that take deltas: the snapshot of its previous message. Every
// bundle message used to carry the whole set (about 1 KiB per cluster:
// its CRL and its intermediate), so one change cost the server the
// fleet's size times the number of watchers; with deltas a change costs
// what changed, computed once for all the streams that had the same set.
type crlStream struct {
	last *CRLSnapshot
}

// message returns the CRL set message for this stream: the whole set the
// first time, then only what changed since the previous message.
func (s *crlStream) message(snap *CRLSnapshot) *meshrootv1.CRLSet {
	var m *meshrootv1.CRLSet
	if s.last == nil {
		m = snap.wholeMessage()
	} else {
		m = snap.deltaFrom(s.last)
	}
	s.last = snap
	return m
}

// copy is a stream in the same place as s (nil for nil), to build a
// message from without moving s.
func (s *crlStream) copy() *crlStream {
	if s == nil {
		return nil
	}
	c := *s
	return &c
}
