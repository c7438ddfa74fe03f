package agent

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/meshroot/meshroot/ca"
)

// Planning ca-crl.pem from the last plan. Once the file is written, every
// change of the fleet makes every agent plan it again, and planning it
// whole (candidates and pickCRLs over the fleet's ~2,000 CRLs and ~1,000
// CAs at 1,000 clusters) was over a third of the agents' CPU per change
// in bench-fleet. A change touches a few CRLs and CAs; the plan of every
// other CA stays as it was. So the cache keeps the last published plan
// (planMemo) with the fleet's CRLs and CAs grouped by issuer name, and the
// next plan, when it starts from the file that plan wrote, redoes only the
// groups of the names the change touched.
//
// Why that is the whole plan: pickCRLs chooses for each issuer name from
// the CRLs and CAs of that name alone (a CRL names its issuer; a CA is
// matched with the CRLs naming its subject; the issuers that no CA is are
// keyed by name and key identifier). Its choice among equals is the first
// in the candidates' order, which is the file's CRLs, then the set's. The
// file written is the last plan's choice, in its order; so for a name the
// change did not touch, its chosen CRLs move ahead of its others without
// changing their own order, and the CRLs that leave the candidates (the
// old file's that were not chosen, and not in the set) were not chosen:
// neither changes what is chosen. A CRL's tier (current, near its
// nextUpdate, past it) moves with the clock, so the last plan holds until
// the earliest time a CRL of it changes tier; from then the plan is made
// whole again, as it is for anything else (a file written by someone
// else, a change of more than planMemoMaxEdits CRLs and CAs).
//
// TestPlanFromLastMatchesWhole checks the plan made so against the whole
// plan over random changes of a fleet, change after change.

const (
	// planMemoGap spaces the order keys of the set's CRLs (keyedEntry),
	// so that CRLs inserted between two keep a key between theirs.
	planMemoGap = 1 << 20
	// planMemoMaxEdits bounds the CRLs and CAs a change may add or remove
	// and still be planned from the last plan.
	planMemoMaxEdits = 512
	// planMemoLookahead is how far the comparison of two lists looks for
	// an element further on before taking it as added or removed (align).
	planMemoLookahead = 8
)

// wholePlansOnly makes every published plan whole, as before planMemo:
// for benchmarks that compare the two.
var wholePlansOnly bool

// planMemo is the last published plan of a cache, and what it was made
// from. mu is held for a whole published plan (planPublishedCRLFile).
type planMemo struct {
	mu    sync.Mutex
	valid bool
	// now is when the plan was made; until validUntil (zero: ever) no
	// CRL of it changes tier.
	now, validUntil time.Time
	// crls and cas are the lists planned (the set's CRLs, the CAs), keys
	// the CRLs' order keys (increasing). crls and cas are the caller's
	// slices, kept as they are (callers never change a list they planned:
	// the watch stream makes a new one per change): copying them was two
	// thousand pointer writes per change, each a write barrier while a
	// collection marks.
	crls []*crlEntry
	keys []int64
	cas  []*crlCA
	// chosen is the plan, in the file's order; missing the CAs without a
	// current CRL, in cas' order.
	chosen  []planBlock
	missing []*crlCA
	groups  map[[32]byte]*planGroup
	// whole and fromLast count the plans made each way (tests).
	whole, fromLast int
	// spareKeys is a buffer, swapped with keys.
	spareKeys []int64
	// spareChosen is the plan before chosen (the file the plan was
	// made from: encodeFromFile), and the buffer of the next.
	spareChosen []planBlock
}

// planGroup is what the plan holds of one issuer name.
type planGroup struct {
	cas    []*crlCA     // the CAs of the name, as in cas (an element twice if there twice)
	set    []keyedEntry // the set's CRLs naming it, in no order (sorted by key when planned)
	chosen []*crlEntry  // the plan's CRLs naming it, in the file's order
	// The lists start in these arrays, which hold a cluster's usual
	// group (its intermediate, its CRL and the one it replaces, the one
	// chosen): every agent holds a group per cluster of the fleet, and
	// three slices of their own were three more objects each for every
	// collection to mark. A list that outgrows its array moves out.
	casBuf    [1]*crlCA
	setBuf    [2]keyedEntry
	chosenBuf [1]*crlEntry
}

// keyedEntry is a CRL of the set with its order key.
type keyedEntry struct {
	e   *crlEntry
	key int64
}

// forgetPlan drops the last published plan: the next one is made whole.
func (c *crlCache) forgetPlan() {
	if c == nil {
		return
	}
	c.memo.mu.Lock()
	c.memo.valid = false
	c.memo.groups = nil
	c.memo.chosen, c.memo.missing = nil, nil
	c.memo.mu.Unlock()
}

// recordPlan keeps a published plan made whole: blocks chosen among
// cands (the file's CRLs and crls) for cas at now, missing the CAs
// without a current CRL; cas and crls are kept. The caller holds
// c.memo.mu.
func (c *crlCache) recordPlan(cas []*crlCA, crls []*crlEntry, cands []crlCandidate, blocks []planBlock, missing []*crlCA, now time.Time) {
	if c == nil || wholePlansOnly {
		return
	}
	m := &c.memo
	m.whole++
	m.valid = true
	m.now = now
	m.validUntil = time.Time{}
	for _, cand := range cands {
		m.foldTier(cand.e, now)
	}
	m.crls = crls
	m.keys = m.keys[:0]
	for i := range crls {
		m.keys = append(m.keys, int64(i+1)*planMemoGap)
	}
	m.cas = cas
	m.chosen, m.spareChosen = blocks, nil
	m.missing = missing
	m.groups = make(map[[32]byte]*planGroup, len(cas))
	for i, e := range crls {
		g := m.group(e.issuer)
		g.set = append(g.set, keyedEntry{e: e, key: m.keys[i]})
	}
	for _, x := range cas {
		g := m.group(x.subject)
		g.cas = append(g.cas, x)
	}
	for _, b := range blocks {
		g := m.group(b.e.issuer)
		g.chosen = append(g.chosen, b.e)
	}
}

// group is the name's group, made when there is none.
func (m *planMemo) group(name [32]byte) *planGroup {
	g := m.groups[name]
	if g == nil {
		g = &planGroup{}
		g.cas, g.set, g.chosen = g.casBuf[:0], g.setBuf[:0], g.chosenBuf[:0]
		m.groups[name] = g
	}
	return g
}

// foldTier brings validUntil forward to the next time after now that e
// changes tier (candidates: at nextUpdate-ca.CRLMinRemaining and at
// nextUpdate).
func (m *planMemo) foldTier(e *crlEntry, now time.Time) {
	nu := e.rl.NextUpdate
	for _, t := range [2]time.Time{nu.Add(-ca.CRLMinRemaining), nu} {
		if t.After(now) {
			if m.validUntil.IsZero() || t.Before(m.validUntil) {
				m.validUntil = t
			}
			return
		}
	}
}

// nextPlan is the published plan for cas and crls with the file file (its
// CRLs' entries) at now, made from the last plan when file is that plan's
// and the change allows (see above); ok is false when it must be made
// whole. cas and crls are kept. The caller holds c.memo.mu.
func (c *crlCache) nextPlan(cas []*crlCA, crls, file []*crlEntry, now time.Time) (blocks, last []planBlock, missing []*crlCA, ok bool) {
	if c == nil || wholePlansOnly {
		return nil, nil, nil, false
	}
	m := &c.memo
	if !m.valid || now.Before(m.now) || (!m.validUntil.IsZero() && !now.Before(m.validUntil)) || len(file) != len(m.chosen) {
		return nil, nil, nil, false
	}
	for i, b := range m.chosen {
		if file[i] != b.e {
			return nil, nil, nil, false
		}
	}
	newKeys := m.spareKeys[:0]
	crlAdded, crlRemoved, ok := align(m.crls, crls, m.keys, &newKeys)
	if !ok {
		return nil, nil, nil, false
	}
	caAdded, caRemoved, ok := align(m.cas, cas, nil, nil)
	if !ok || len(crlAdded)+len(crlRemoved)+len(caAdded)+len(caRemoved) > planMemoMaxEdits {
		return nil, nil, nil, false
	}
	// Every group the change removes from must be known; otherwise the
	// memo is not what it claims (never expected): plan whole.
	for _, i := range crlRemoved {
		if m.groups[m.crls[i].issuer] == nil {
			m.valid = false
			return nil, nil, nil, false
		}
	}
	for _, i := range caRemoved {
		if m.groups[m.cas[i].subject] == nil {
			m.valid = false
			return nil, nil, nil, false
		}
	}

	// The groups the change touches, updated to the new lists.
	touched := make(map[[32]byte]*planGroup)
	touch := func(name [32]byte) *planGroup {
		g := m.group(name)
		touched[name] = g
		return g
	}
	for _, i := range crlRemoved {
		g := touch(m.crls[i].issuer)
		g.set = removeKeyed(g.set, m.crls[i], m.keys[i])
	}
	for _, j := range crlAdded {
		g := touch(crls[j].issuer)
		g.set = append(g.set, keyedEntry{e: crls[j], key: newKeys[j]})
	}
	for _, i := range caRemoved {
		g := touch(m.cas[i].subject)
		if k := slices.Index(g.cas, m.cas[i]); k >= 0 {
			g.cas = slices.Delete(g.cas, k, k+1)
		}
	}
	for _, j := range caAdded {
		g := touch(cas[j].subject)
		g.cas = append(g.cas, cas[j])
	}

	// The touched groups planned again, from their CRLs in the order the
	// whole plan would see them (the file's, then the set's) and their
	// CAs in cas' order.
	var oldChosen ptrSet[crlEntry]
	var setPart []keyedEntry
	var caSet ptrSet[crlCA]
	for _, g := range touched {
		for _, e := range g.chosen {
			oldChosen.add(e)
		}
		setPart = append(setPart, g.set...)
		for _, x := range g.cas {
			caSet.add(x)
		}
	}
	slices.SortFunc(setPart, func(a, b keyedEntry) int { return cmp.Compare(a.key, b.key) })
	all := make([]*crlEntry, 0, oldChosen.len()+len(setPart))
	for _, b := range m.chosen {
		if oldChosen.has(b.e) {
			all = append(all, b.e)
		}
	}
	for _, k := range setPart {
		all = append(all, k.e)
	}
	var subCAs []*crlCA
	if caSet.len() > 0 {
		for _, x := range cas {
			if caSet.has(x) {
				subCAs = append(subCAs, x)
			}
		}
	}
	cands := candidates(all, now)
	subChosen, subMissing := pickCRLs(c, subCAs, cands, 0, now)
	for _, cand := range cands {
		m.foldTier(cand.e, now)
	}

	// The plan: the last one's CRLs in their order, less those the
	// touched groups no longer choose, then the touched groups' new
	// choices from the set, in its order.
	var newChosen ptrSet[crlEntry]
	for _, cand := range subChosen {
		newChosen.add(cand.e)
	}
	blocks = slices.Grow(m.spareChosen[:0], len(m.chosen)+len(subChosen))
	for _, b := range m.chosen {
		if oldChosen.has(b.e) && !newChosen.has(b.e) {
			continue
		}
		blocks = append(blocks, b)
	}
	for _, cand := range subChosen {
		if !oldChosen.has(cand.e) {
			blocks = append(blocks, blockOf(c, cand.e))
		}
	}
	for _, g := range touched {
		g.chosen = g.chosen[:0]
	}
	for _, cand := range subChosen {
		g := touched[cand.e.issuer]
		g.chosen = append(g.chosen, cand.e)
	}
	for name, g := range touched {
		if len(g.cas) == 0 && len(g.set) == 0 && len(g.chosen) == 0 {
			delete(m.groups, name)
		}
	}

	// The CAs without a current CRL, in cas' order: the last plan's of
	// the groups not touched, and the touched groups' now.
	var missSet ptrSet[crlCA]
	for _, x := range m.missing {
		if touched[x.subject] == nil {
			missSet.add(x)
		}
	}
	for _, x := range subMissing {
		missSet.add(x)
	}
	if missSet.len() > 0 {
		missing = make([]*crlCA, 0, missSet.len())
		for _, x := range cas {
			if missSet.has(x) {
				missing = append(missing, x)
				missSet.remove(x)
			}
		}
	}

	m.fromLast++
	m.now = now
	m.crls, m.cas = crls, cas
	m.spareKeys, m.keys = m.keys, newKeys
	m.spareChosen, m.chosen = m.chosen, blocks
	m.missing = missing
	return blocks, m.spareChosen, missing, true
}

// withPlanned calls f, and reports true, when entries are the CRLs of
// the last published plan, in its order: f gets a function returning the
// plan's CRLs that name an issuer (the SHA-256 of its name), so a reader
// of the file looks at the few it wants instead of ~1,000. The plan is
// held for f's call.
func (c *crlCache) withPlanned(entries []*crlEntry, f func(named func([32]byte) []*crlEntry)) bool {
	if c == nil {
		return false
	}
	m := &c.memo
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.valid || len(entries) != len(m.chosen) {
		return false
	}
	for i, b := range m.chosen {
		if entries[i] != b.e {
			return false
		}
	}
	f(func(name [32]byte) []*crlEntry {
		if g := m.groups[name]; g != nil {
			return g.chosen
		}
		return nil
	})
	return true
}

// align compares b with a, the list it was made from, pointer by pointer,
// matching them in order: added are the indices in b of the elements
// not matched, removed those in a. With keys (a's order keys), newKeys
// gets b's: a matched element keeps its key, an added one gets one
// between its neighbours'. ok is false when the lists differ by more than
// planMemoMaxEdits elements, or when there is no key left between two.
func align[T any](a, b []*T, keys []int64, newKeys *[]int64) (added, removed []int, ok bool) {
	i, j := 0, 0
	pending := 0 // added[pending:] have no key yet
	var last int64
	assign := func(hi int64, open bool) bool {
		if newKeys == nil {
			return true
		}
		run := added[pending:]
		step := int64(planMemoGap)
		if !open {
			step = (hi - last) / int64(len(run)+1)
			if step < 1 {
				return false
			}
		}
		for n, k := range run {
			(*newKeys)[k] = last + step*int64(n+1)
		}
		if len(run) > 0 {
			last += step * int64(len(run))
		}
		pending = len(added)
		return true
	}
	if newKeys != nil {
		*newKeys = slices.Grow((*newKeys)[:0], len(b))[:len(b)]
	}
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			if newKeys != nil {
				if !assign(keys[i], false) {
					return nil, nil, false
				}
				(*newKeys)[j] = keys[i]
				last = keys[i]
			}
			i++
			j++
			continue
		case i == len(a):
			added = append(added, j)
			j++
		case j == len(b):
			removed = append(removed, i)
			i++
		case slices.Index(b[j+1:min(len(b), j+1+planMemoLookahead)], a[i]) >= 0:
			added = append(added, j)
			j++
		case slices.Index(a[i+1:min(len(a), i+1+planMemoLookahead)], b[j]) >= 0:
			removed = append(removed, i)
			i++
		default:
			removed = append(removed, i)
			added = append(added, j)
			i++
			j++
		}
		if len(added)+len(removed) > planMemoMaxEdits {
			return nil, nil, false
		}
	}
	if !assign(0, true) {
		return nil, nil, false
	}
	return added, removed, true
}

// removeKeyed removes e with key from s.
func removeKeyed(s []keyedEntry, e *crlEntry, key int64) []keyedEntry {
	for k, x := range s {
		if x.e == e && x.key == key {
			return slices.Delete(s, k, k+1)
		}
	}
	return s
}

// ptrSet is a set of pointers: a list while small (a change touches a
// few CRLs, and the plan asks each of ~1,000 whether it is one of them),
// a map beyond.
type ptrSet[T any] struct {
	small []*T
	big   map[*T]struct{}
}

const ptrSetSmall = 16

func (s *ptrSet[T]) add(p *T) {
	if s.has(p) {
		return
	}
	if s.big == nil && len(s.small) < ptrSetSmall {
		s.small = append(s.small, p)
		return
	}
	if s.big == nil {
		s.big = make(map[*T]struct{}, 2*ptrSetSmall)
		for _, q := range s.small {
			s.big[q] = struct{}{}
		}
		s.small = nil
	}
	s.big[p] = struct{}{}
}

func (s *ptrSet[T]) has(p *T) bool {
	if s.big != nil {
		_, ok := s.big[p]
		return ok
	}
	return slices.Contains(s.small, p)
}

func (s *ptrSet[T]) remove(p *T) {
	if s.big != nil {
		delete(s.big, p)
		return
	}
	if k := slices.Index(s.small, p); k >= 0 {
		s.small = slices.Delete(s.small, k, k+1)
	}
}

func (s *ptrSet[T]) len() int {
	if s.big != nil {
		return len(s.big)
	}
	return len(s.small)
}

// encodeFromFile writes blocks into p as encodePlan does, from file, a
// ca-crl.pem that is exactly the PEM blocks of last (the plan blocks was
// made from, whose CRLs it keeps in their order before those it adds): the
// runs of CRLs kept are copied from the file as they stand, not gathered
// from ~1,000 blocks kept apart. It reports false, doing nothing, when
// file is not last's blocks.
func encodeFromFile(cache *crlCache, p *CRLPlan, blocks, last []planBlock, file []byte) bool {
	if cache == nil || len(blocks) == 0 || len(last) == 0 || !cache.isFile(file, last) {
		return false
	}
	var parts [][]byte
	off, j := 0, 0
	start := -1 // the start in file of the run being copied
	for _, b := range last {
		if j < len(blocks) && blocks[j].e == b.e {
			if start < 0 {
				start = off
			}
			j++
		} else if start >= 0 {
			parts = append(parts, file[start:off])
			start = -1
		}
		off += len(b.pem)
	}
	if start >= 0 {
		parts = append(parts, file[start:off])
	}
	if off != len(file) {
		return false
	}
	for _, b := range blocks[j:] {
		parts = append(parts, b.pem)
	}
	setPlanFile(cache, p, blocks, parts)
	return true
}
