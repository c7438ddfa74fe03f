package server

import (
	"crypto/sha256"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
)

// CRLKeys are the SHA-256 of the DER of each entry of a CRL set, in the
// set's order: what a watch stream remembers having sent. The hub
// computes them once per set, not once per watcher.
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

// crlStream is what one watch stream has sent of the fleet's CRL set, for
// agents that take deltas. Every bundle message used to carry the whole
// set (about 1 KiB per cluster: its CRL and its intermediate), so one
// change cost the server the fleet's size times the number of watchers;
// with deltas a change costs what changed.
type crlStream struct {
	started bool
	crls    map[[32]byte]struct{}
	inters  map[[32]byte]struct{}
}

// message returns the CRL set message for this stream: the whole set the
// first time, then only what was added since the previous message, with
// the keys of what was removed.
func (s *crlStream) message(set ca.CRLSet, keys CRLKeys) *meshrootv1.CRLSet {
	if len(keys.CRLs) != len(set.CRLs) || len(keys.Intermediates) != len(set.Intermediates) {
		keys = crlKeysOf(set) // a set the hub did not key
	}
	m := &meshrootv1.CRLSet{Missing: set.Missing, Delta: s.started}
	crls, inters := make(map[[32]byte]struct{}, len(keys.CRLs)), make(map[[32]byte]struct{}, len(keys.Intermediates))
	for i, k := range keys.CRLs {
		crls[k] = struct{}{}
		if _, had := s.crls[k]; !had || !s.started {
			m.Crls = append(m.Crls, set.CRLs[i])
		}
	}
	for i, k := range keys.Intermediates {
		inters[k] = struct{}{}
		if _, had := s.inters[k]; !had || !s.started {
			m.Intermediates = append(m.Intermediates, set.Intermediates[i].Raw)
		}
	}
	if s.started {
		m.Removed = append(removedKeys(s.crls, crls), removedKeys(s.inters, inters)...)
	}
	s.started, s.crls, s.inters = true, crls, inters
	return m
}

func removedKeys(before, now map[[32]byte]struct{}) [][]byte {
	var out [][]byte
	for k := range before {
		if _, ok := now[k]; !ok {
			out = append(out, append([]byte(nil), k[:]...))
		}
	}
	return out
}
