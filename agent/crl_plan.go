package agent

import (
	"crypto/x509"
	"encoding/pem"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshroot/meshroot/ca"
)

// Choosing ca-crl.pem. Envoy's rule is strict: once any CRL is configured,
// every CA of a presented chain needs a current CRL, or the chain is
// refused. And istiod never retracts a CRL it has published in the
// istio-ca-crl ConfigMap: a ca-crl.pem taken out of cacerts (or emptied)
// leaves the proxies with the last one it read. Hence two rules:
//
//   - Before the agent ever wrote ca-crl.pem into the cluster's cacerts
//     (istiod has no CRL), it writes the file only when every CA has a
//     current CRL (PlanCRLFile): leaving it out breaks nothing.
//   - Once it did (istiod may have published it), the file is never taken
//     out and never left stale (PlanPublishedCRLFile): it holds the
//     freshest CRL known for every CA that has one, also when some CA has
//     none; the gap is reported (Missing), not papered over by a removal
//     that istiod would ignore.

// CRLPlan is what the agent would write as ca-crl.pem, or why not.
type CRLPlan struct {
	// PEM is the file's content; nil when it must not be written.
	PEM []byte
	// Missing names the CAs without a current CRL.
	Missing    []string
	missingCAs []*crlCA
	// MinNextUpdate is the earliest nextUpdate of the CRLs in PEM.
	MinNextUpdate time.Time
}

func (p *CRLPlan) setMissing(cas []*crlCA) {
	p.missingCAs = cas
	for _, c := range cas {
		p.Missing = append(p.Missing, c.name())
	}
}

// crlCandidate is one parsed CRL the plan may pick.
type crlCandidate struct {
	e *crlEntry // the CRL's entry (the cache's, or made for this plan)
	// tier: 2 current (more than ca.CRLMinRemaining left, or to the end
	// of its CA's life), 1 not yet at its nextUpdate, 0 past it.
	tier int
}

// better says whether c should be written rather than o for the same CA:
// a fresher tier first, then the higher CRL number, then the later
// nextUpdate. So a CRL never gives way to one with a lower number unless
// that one is current and it is not.
func (c crlCandidate) better(o crlCandidate) bool {
	if c.tier != o.tier {
		return c.tier > o.tier
	}
	if n := c.e.rl.Number.cmp(o.e.rl.Number); n != 0 {
		return n > 0
	}
	return c.e.rl.NextUpdate.After(o.e.rl.NextUpdate)
}

// candidates are the plan's candidates among es (CRLs without a number
// are skipped), each entry once: the fleet's set and the file share
// their entries. An entry is marked with the plan's number when taken,
// instead of being kept in a map: at 1,000 clusters a plan sees ~2,000
// entries, and a map of them was 8 % of the agents' CPU per change.
// (Two plans over the same entries at once could each take one twice; a
// duplicate is harmless, pickCRLs picks one candidate per issuer.)
func candidates(es []*crlEntry, now time.Time) []crlCandidate {
	out := make([]crlCandidate, 0, len(es))
	plan := planNumbers.Add(1)
	for _, e := range es {
		if !e.rl.Number.ok || e.plan.Swap(plan) == plan {
			continue
		}
		c := crlCandidate{e: e}
		switch {
		case e.rl.NextUpdate.After(now.Add(ca.CRLMinRemaining)):
			c.tier = 2
		case e.rl.NextUpdate.After(now):
			c.tier = 1
		}
		out = append(out, c)
	}
	return out
}

// pickCRLs chooses, for each CA in cas, the best candidate it signed
// (minTier or fresher), and for every other issuer the best current one
// (CRLs of superseded intermediates ride along while current). It returns
// the chosen CRLs in the candidates' order and the CAs without a current
// CRL. CAs and CRLs are matched by their precomputed identifiers (crlCA,
// crlEntry): at 1,000 clusters a plan looks up each of ~1,000 CAs and
// CRLs several times, on every change of the fleet.
func pickCRLs(cache *crlCache, cas []*crlCA, cands []crlCandidate, minTier int, now time.Time) (chosen []crlCandidate, missing []*crlCA) {
	sc := pickScratches.Get().(*pickScratch)
	defer sc.put()
	best := sc.best         // issuer key -> index in cands
	required := sc.required // issuer keys of the CAs in cas
	seen := sc.seen         // the CAs of cas seen, by id
	// Candidates by issuer name, as lists threaded through next (in the
	// candidates' order): each CA looks only at CRLs naming it, so that a
	// fleet of N clusters plans in O(N), not O(N^2).
	first := sc.first
	next := make([]int, len(cands))
	for i := len(cands) - 1; i >= 0; i-- {
		k := cands[i].e.issuer
		if j, ok := first[k]; ok {
			next[i] = j
		} else {
			next[i] = -1
		}
		first[k] = i
	}
	for _, c := range cas {
		if seen[c.id] {
			continue
		}
		seen[c.id] = true
		required[c.key] = true
		pick := -1
		i, ok := first[c.subject]
		for ; ok && i >= 0; i = next[i] {
			cand := cands[i]
			if cache.checkEntry(cand.e, c) != nil {
				continue
			}
			// A CRL that runs to its CA's own expiry is current for it
			// (ca.CRLCurrent): a short-lived intermediate signs no longer one.
			if cand.tier == 1 && ca.CRLCurrentUntil(cand.e.rl.NextUpdate, c.notAfter, now) {
				cand.tier = 2
				cands[i].tier = 2
			}
			if cand.tier < minTier {
				continue
			}
			if pick < 0 || cand.better(cands[pick]) {
				pick = i
			}
		}
		if pick < 0 || cands[pick].tier < 2 {
			missing = append(missing, c)
		}
		if pick >= 0 {
			best[c.key] = pick
		}
	}
	for i, cand := range cands {
		k := cand.e.issuerKey
		if required[k] || cand.tier < 2 {
			continue
		}
		if j, ok := best[k]; !ok || cand.better(cands[j]) {
			best[k] = i
		}
	}
	picked := make([]bool, len(cands))
	n := 0
	for _, i := range best {
		picked[i] = true
		n++
	}
	chosen = make([]crlCandidate, 0, n)
	for i, cand := range cands {
		if picked[i] {
			chosen = append(chosen, cand)
		}
	}
	return chosen, missing
}

// planNumbers numbers the plans of the process, for candidates' marks.
var planNumbers atomic.Uint64

// pickScratch is the maps pickCRLs fills, kept for the next plan: at
// 1,000 clusters each holds ~1,000 keys, and making them anew for every
// plan (every agent, every change of the fleet) was a fifth of the
// plan's time. A pool, not a field of the agent: the maps are empty
// between plans, and a fleet of agents in one process (bench-fleet)
// shares them.
type pickScratch struct {
	best, first    map[[32]byte]int
	required, seen map[[32]byte]bool
}

var pickScratches = sync.Pool{New: func() any {
	return &pickScratch{best: map[[32]byte]int{}, first: map[[32]byte]int{}, required: map[[32]byte]bool{}, seen: map[[32]byte]bool{}}
}}

// put empties sc's maps (keeping their room) and returns it to the pool.
func (sc *pickScratch) put() {
	clear(sc.best)
	clear(sc.first)
	clear(sc.required)
	clear(sc.seen)
	pickScratches.Put(sc)
}

// planBlock is one CRL of a planned ca-crl.pem, with what encoding the
// file and recording it read of the CRL (kept together, so that a plan
// made from the last one reads its ~1,000 CRLs from one array, not from
// each CRL's entry: crl_memo.go).
type planBlock struct {
	e          *crlEntry
	pem, der   []byte
	nextUpdate time.Time
}

// planBlocks are chosen's CRLs as blocks, their PEM encoded once.
func planBlocks(cache *crlCache, chosen []crlCandidate) []planBlock {
	out := make([]planBlock, len(chosen))
	for i, c := range chosen {
		out[i] = blockOf(cache, c.e)
	}
	return out
}

// blockOf is e as a block of the plan.
func blockOf(cache *crlCache, e *crlEntry) planBlock {
	return planBlock{e: e, pem: cache.entryPEM(e), der: e.rl.Raw, nextUpdate: e.rl.NextUpdate}
}

// encodePlan PEM-concatenates blocks into p.
// The file is allocated at its size: every agent of a fleet keeps its
// last one (~1 MB at 1,000 clusters) until the next change.
func encodePlan(cache *crlCache, p *CRLPlan, blocks []planBlock) {
	if len(blocks) == 0 {
		return // nothing to write: PEM stays nil
	}
	pems := make([][]byte, len(blocks))
	for i, b := range blocks {
		pems[i] = b.pem
	}
	setPlanFile(cache, p, blocks, pems)
}

// setPlanFile makes p's file of parts, the PEM blocks of blocks in order
// (each part one block or a run of them), and records it as planned.
func setPlanFile(cache *crlCache, p *CRLPlan, blocks []planBlock, parts [][]byte) {
	p.MinNextUpdate = minNextUpdate(blocks)
	p.PEM = cache.joinFile(parts)
	cache.planned(blocks, p.PEM)
}

// minNextUpdate is the earliest nextUpdate of blocks' CRLs.
func minNextUpdate(blocks []planBlock) time.Time {
	var earliest time.Time
	for _, b := range blocks {
		if earliest.IsZero() || b.nextUpdate.Before(earliest) {
			earliest = b.nextUpdate
		}
	}
	return earliest
}

// PlanCRLFile is the rule before the first ca-crl.pem: for each CA in cas
// the current CRL with the highest number among crls that it signed,
// PEM-concatenated; a CA without one (none ca.CRLCurrent) is named in
// Missing and PEM is nil. CRLs of other issuers (superseded
// intermediates) ride along when current.
func PlanCRLFile(cas []*x509.Certificate, crls [][]byte, now time.Time) CRLPlan {
	var once crlCache // the same DER twice is one CRL
	return planCRLFile(&once, crlCAs(cas), once.entries(crls), now)
}

// planCRLFile is PlanCRLFile for the CRLs crls, entries of cache.
func planCRLFile(cache *crlCache, cas []*crlCA, crls []*crlEntry, now time.Time) CRLPlan {
	cache.forgetPlan() // the next published plan is made whole
	var p CRLPlan
	chosen, missing := pickCRLs(cache, cas, candidates(crls, now), 2, now)
	if p.setMissing(missing); len(missing) > 0 {
		return p
	}
	encodePlan(cache, &p, planBlocks(cache, chosen))
	return p
}

// PlanPublishedCRLFile is the rule once ca-crl.pem was written (held is
// its content, which istiod may have published): from crls (the fleet's
// set, freshest first in preference) and the CRLs in held, for each CA in
// cas the best CRL it signed (current before stale, then the highest
// number: never one with a lower number than held's while that is
// current; held's own when nothing newer is known, even stale), plus the
// current CRLs of other issuers. The CAs without a current CRL are named
// in Missing, but PEM is written anyway. PEM is never empty: with nothing
// to choose it is held unchanged (nil when held is empty too).
func PlanPublishedCRLFile(cas []*x509.Certificate, crls [][]byte, held []byte, now time.Time) CRLPlan {
	var once crlCache // the same DER twice is one CRL
	return planPublishedCRLFile(&once, crlCAs(cas), once.entries(crls), held, now)
}

// planPublishedCRLFile is PlanPublishedCRLFile for the CRLs crls, entries
// of cache. The cache keeps cas and crls for the next plan: callers must
// not change them afterwards.
func planPublishedCRLFile(cache *crlCache, cas []*crlCA, crls []*crlEntry, held []byte, now time.Time) CRLPlan {
	if cache != nil {
		cache.memo.mu.Lock()
		defer cache.memo.mu.Unlock()
	}
	// held's CRLs first: what stays keeps its place in the file, and only
	// what changed moves, so the same CRLs in another order of the set (a
	// polled bundle's against the watch's, which appends what a delta
	// adds) plan the file held, and istiod is not made to publish it again.
	file := cache.fileEntries(held)
	blocks, last, missing, ok := cache.nextPlan(cas, crls, file, now)
	if !ok {
		all := append(append(make([]*crlEntry, 0, len(file)+len(crls)), file...), crls...)
		cands := candidates(all, now)
		var chosen []crlCandidate
		chosen, missing = pickCRLs(cache, cas, cands, 0, now)
		blocks = planBlocks(cache, chosen)
		cache.recordPlan(cas, crls, cands, blocks, missing, now)
	}
	var p CRLPlan
	p.setMissing(missing)
	if len(blocks) == 0 {
		if len(held) > 0 {
			p.PEM = held
		}
		return p
	}
	if cache.isFile(held, blocks) {
		// The file held is the plan (the roots changed, not the CRLs):
		// held itself, not a ~1 MB copy of it at every such change.
		p.PEM = held
		p.MinNextUpdate = minNextUpdate(blocks)
		return p
	}
	if ok && encodeFromFile(cache, &p, blocks, last, held) {
		return p
	}
	encodePlan(cache, &p, blocks)
	return p
}

// pemCRLs returns the DER of every X509 CRL block in data.
func pemCRLs(data []byte) [][]byte {
	var out [][]byte
	for blk, rest := pem.Decode(data); blk != nil; blk, rest = pem.Decode(rest) {
		if blk.Type == "X509 CRL" {
			out = append(out, blk.Bytes)
		}
	}
	return out
}
