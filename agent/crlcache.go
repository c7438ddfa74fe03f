package agent

import (
	"bytes"
	"cmp"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
)

// maxCachedCRLs bounds the parsed CRLs an agent keeps: the fleet's set
// (one per root, one per cluster intermediate, and the last of each
// superseded intermediate while current) and the next one. It must hold a
// whole set: below that, every reconcile would parse and verify the whole
// set again (a 1,000-cluster fleet has over 1,000 CRLs, twice that during
// a rotation). They are found by their DER (derIndex): a reconcile makes
// several lookups per CRL of the fleet.
const maxCachedCRLs = 8192

// crlCache keeps parsed CRLs by their DER. Every reconcile looks at the
// fleet's whole CRL set several times (planning ca-crl.pem, finding the
// cluster's own CRL, reporting what the file holds) and nearly all of it
// is unchanged from the last one; a root CRL with 10,000 entries takes
// tens of milliseconds to parse and one hash to find again. A nil cache
// parses every time.
//
// Every agent of a fleet keeps one entry per CRL of the fleet, so an
// entry holds what the agent reads and no more (crlEntry): at 1,000
// clusters the cache is most of what an agent holds beyond its idle
// memory (BenchmarkFleetStateHeld).
type crlCache struct {
	mu sync.Mutex
	m  derIndex[*crlEntry]
	// file is the last ca-crl.pem decoded: a reconcile reads the
	// Secret's file several times (planning, the report) and decoding
	// 1,000 CRLs' PEM takes ~2 ms each time.
	file pemFile
	// set is the last CRL set of a bundle resolved to entries
	// (setEntries): a reconcile reads the fleet's set three or four times
	// (its own CRL, the plan, the report), and finding 1,000 CRLs by
	// their DER each time was 15 % of the agents' CPU at 1,000 clusters.
	set     *meshrootv1.CRLSet
	setEnts []*crlEntry
	// memo is the last published plan, kept to plan the next one from
	// what changed (crl_memo.go).
	memo planMemo
	// grown is the last ca-crl.pem joinFile made, up to its length; its
	// spare capacity, past that, is the next file's room (crlgrow.go).
	grown []byte
	// grewInPlace counts the files joinFile made in the last one's room.
	grewInPlace int
	// fileNo numbers the planned files whose blocks the entries' PEM
	// points into, and inFile is the last one's entries (pointIntoFile).
	fileNo uint32
	inFile []*crlEntry
}

// pemFile is a ca-crl.pem decoded. When the file is exactly the PEM blocks
// of CRLs the cache holds, as the agent writes it, it is remembered as
// those entries, not as bytes: recognising it again is one comparison of
// the file with their blocks, and the file itself (~1 MB at 1,000
// clusters) is not kept between reconciles. Any other file is remembered
// as passed (not copied: callers never change a file they passed).
type pemFile struct {
	canonical bool
	entries   []*crlEntry // canonical: the file is their PEM blocks, in order
	src       []byte      // not canonical: the file
	ders      [][]byte    // its CRLs' DER; nil when nothing was decoded yet
	// seen is the first byte of the last slice found to be this file,
	// and seenLen its length. A reconcile passes the same Secret's file
	// three or four times (the plan twice, the report), and comparing
	// ~1 MB each time was ~6 % of the agents' CPU at 1,000 clusters:
	// the same slice again matches without a comparison (callers never
	// change a file they passed). The pointer is weak, so the file is
	// still not kept; two weak pointers are equal only when made from
	// the same object at the same offset, even once it was freed and its
	// memory reused, so a new file at an old one's address is compared.
	seen    weak.Pointer[byte]
	seenLen int
}

// matches reports whether data is the file f was decoded from. Callers
// hold the cache's lock.
func (f *pemFile) matches(data []byte) bool {
	switch {
	case f.ders == nil:
		return false
	case len(data) > 0 && len(data) == f.seenLen && weak.Make(&data[0]) == f.seen:
		return true
	case !f.canonical:
		if !bytes.Equal(f.src, data) {
			return false
		}
		f.saw(data)
		return true
	}
	off := 0
	for _, e := range f.entries {
		n := len(e.pem)
		if n == 0 || off+n > len(data) || !bytes.Equal(data[off:off+n], e.pem) {
			return false
		}
		off += n
	}
	if off != len(data) {
		return false
	}
	f.saw(data)
	return true
}

// saw records data as a slice that is f's file (matches).
func (f *pemFile) saw(data []byte) {
	if len(data) == 0 {
		return
	}
	f.seen, f.seenLen = weak.Make(&data[0]), len(data)
}

// crlEntry is one CRL of the cache.
type crlEntry struct {
	// rl is the CRL with only the fields the agent reads (leanCRL), in
	// the entry itself: one object less per CRL of the fleet.
	rl leanRevocationList
	// pem is its PEM block as ca-crl.pem holds it, once encoded:
	// re-encoding the fleet's CRLs for every plan cost about as much as
	// decoding them.
	pem []byte
	// checked holds the result of checking its signature against each
	// issuer tried, failures too: an ECDSA verification on every
	// reconcile cost more than parsing once, and a cluster's successive
	// intermediates share their subject name, so after a rotation every
	// plan tried each cluster's CRLs against the other intermediate and
	// failed again (300 failed verifications per plan at 300 clusters).
	// A CRL names one issuer, so the list holds the CAs of that name and
	// key identifier (checkEntry refuses the others unverified): one,
	// more for certificates of one key (a root and its cross-signed
	// copy) or CAs without key identifiers. The first result is held in
	// the entry itself (checked1, when has1), the others in checkedMore:
	// one slice per CRL of the fleet was one more object for every
	// collection to mark.
	checkedMore []checkedIssuer
	checked1    checkedIssuer
	has1        bool
	// inFile is the number of the file (crlCache.fileNo) that pem is a
	// slice of, 0 when pem is its own (pointIntoFile).
	inFile uint32
	// plan is the number of the last plan that took the entry as a
	// candidate (candidates).
	plan atomic.Uint64
	// issuer and issuerKey identify the CA that the CRL names (issuerIDs):
	// the plan groups and matches the fleet's CRLs by them on every
	// change, and hashing 32 bytes is cheaper than hashing (and, as a new
	// map key, copying) the issuer's name. Last: a collection scans an
	// object up to its last pointer, and every agent holds one entry per
	// cluster of the fleet.
	issuer, issuerKey [32]byte
}

// checkedIssuer is the result of checking a CRL's signature with the
// certificate whose DER's SHA-256 is id (crlCA.id): every plan looks a
// fleet's ~1,000 CRLs up in these lists, and comparing 32 bytes is
// cheaper than comparing the issuers' ~700 bytes of DER.
type checkedIssuer struct {
	err error
	id  [32]byte // after err: a collection scans up to the last pointer
}

// leanRevocationList is what the agent reads of a CRL: its DER and the
// signed part (the signature check), issuer name and key identifier,
// number and update times, with x509.RevocationList's field names. Every
// agent keeps one per CRL of the fleet, and an x509.RevocationList is
// ~580 bytes of fields that almost all hold pointers, which every
// collection scans: this is a third of it. The revoked entries are left
// out: the agent passes them through to istiod, it does not read them,
// and a root CRL with 10,000 entries parses to megabytes of them.
type leanRevocationList struct {
	Raw                  []byte
	RawTBSRevocationList []byte
	RawIssuer            []byte
	Signature            []byte
	AuthorityKeyId       []byte
	ThisUpdate           time.Time
	NextUpdate           time.Time
	Number               crlNumber
	SignatureAlgorithm   x509.SignatureAlgorithm
}

// crlNumber is a CRL's number, held in the struct when it fits in 64
// bits, as meshroot's do (the signing time in nanoseconds): a *big.Int
// is two more objects per CRL of the fleet for every collection to mark.
type crlNumber struct {
	big   *big.Int // the number when it does not fit in small
	small uint64
	ok    bool // the CRL has a number
}

// numberOf is n as a crlNumber (nil: no number).
func numberOf(n *big.Int) crlNumber {
	switch {
	case n == nil:
		return crlNumber{}
	case n.Sign() >= 0 && n.IsUint64():
		return crlNumber{small: n.Uint64(), ok: true}
	default:
		return crlNumber{big: n, ok: true}
	}
}

// toBig is n as a big.Int (nil: no number).
func (n crlNumber) toBig() *big.Int {
	switch {
	case !n.ok:
		return nil
	case n.big != nil:
		return n.big
	default:
		return new(big.Int).SetUint64(n.small)
	}
}

// cmp compares n and o as big.Int.Cmp does; a missing number counts as 0.
func (n crlNumber) cmp(o crlNumber) int {
	if n.big == nil && o.big == nil {
		return cmp.Compare(n.small, o.small)
	}
	a, b := n.toBig(), o.toBig()
	if a == nil {
		a = new(big.Int)
	}
	if b == nil {
		b = new(big.Int)
	}
	return a.Cmp(b)
}

// uint64 is n when the CRL has a number that fits in 64 bits.
func (n crlNumber) uint64() (uint64, bool) {
	return n.small, n.ok && n.big == nil
}

// leanCRL is rl as a leanRevocationList (sharing its byte slices).
func leanCRL(rl *x509.RevocationList) leanRevocationList {
	return leanRevocationList{
		Raw:                  rl.Raw,
		RawTBSRevocationList: rl.RawTBSRevocationList,
		RawIssuer:            rl.RawIssuer,
		Signature:            rl.Signature,
		SignatureAlgorithm:   rl.SignatureAlgorithm,
		AuthorityKeyId:       rl.AuthorityKeyId,
		Number:               numberOf(rl.Number),
		ThisUpdate:           rl.ThisUpdate,
		NextUpdate:           rl.NextUpdate,
	}
}

// CheckSignatureFrom is x509.RevocationList.CheckSignatureFrom: it
// verifies that the CRL was signed by parent's key.
func (rl *leanRevocationList) CheckSignatureFrom(parent *x509.Certificate) error {
	full := x509.RevocationList{
		Raw: rl.Raw, RawTBSRevocationList: rl.RawTBSRevocationList, RawIssuer: rl.RawIssuer,
		Signature: rl.Signature, SignatureAlgorithm: rl.SignatureAlgorithm, AuthorityKeyId: rl.AuthorityKeyId,
		Number: rl.Number.toBig(), ThisUpdate: rl.ThisUpdate, NextUpdate: rl.NextUpdate,
	}
	return full.CheckSignatureFrom(parent)
}

// pemCRLs returns the DER of every X509 CRL block in data (shared: callers
// must not change it). The CRLs are parsed into the cache and returned as
// the cache's bytes, so the decoded ones are not kept twice. data is
// remembered as it is when it is not the cache's CRLs' blocks: callers
// must not change it afterwards.
func (c *crlCache) pemCRLs(data []byte) [][]byte {
	if c == nil {
		return pemCRLs(data)
	}
	c.mu.Lock()
	if c.file.matches(data) {
		ders := c.file.ders
		c.mu.Unlock()
		return ders
	}
	c.mu.Unlock()
	ders := pemCRLs(data)
	if ders == nil {
		ders = [][]byte{}
	}
	for _, der := range ders {
		_, _ = c.parseEntry(der) // malformed ones stay out, and the file is not canonical
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	f := pemFile{canonical: true, entries: make([]*crlEntry, 0, len(ders)), ders: ders}
	for i, der := range ders {
		e, ok := c.m.get(der)
		if !ok {
			f.canonical, f.entries = false, nil
			break
		}
		if e.pem == nil {
			e.pem = crlPEM(e.rl.Raw)
		}
		ders[i] = e.rl.Raw
		f.entries = append(f.entries, e)
	}
	if f.canonical && !f.matches(data) { // other blocks, text or line breaks
		f.canonical, f.entries = false, nil
	}
	if !f.canonical {
		f.src = data
		f.saw(data)
	}
	c.file = f
	return ders
}

// entries returns the entries of the CRLs in ders that parse, in order
// (parseEntry: with a nil cache, made for the caller).
func (c *crlCache) entries(ders [][]byte) []*crlEntry {
	out := make([]*crlEntry, 0, len(ders))
	for _, der := range ders {
		if e, err := c.parseEntry(der); err == nil {
			out = append(out, e)
		}
	}
	return out
}

// setEntries returns the entries of set's CRLs that parse, in order,
// resolved once per set: a bundle's set is never changed once received
// (the watch builds a new one for every delta), so the set itself is
// the key. The result is shared: callers must not change it (append
// to a copy).
func (c *crlCache) setEntries(set *meshrootv1.CRLSet) []*crlEntry {
	if c == nil {
		return c.entries(set.GetCrls())
	}
	c.mu.Lock()
	if set != nil && c.set == set {
		es := c.setEnts
		c.mu.Unlock()
		return es
	}
	c.mu.Unlock()
	es := c.entries(set.GetCrls()) // not under the lock: parseEntry takes it
	if set != nil {
		c.mu.Lock()
		c.set, c.setEnts = set, es
		c.mu.Unlock()
	}
	return es
}

// resolved records es as the entries of set's CRLs that parse, in order
// (what setEntries would return), resolved by the watch stream that
// built set from the last one (crlStream). es is kept: callers must not
// change it.
func (c *crlCache) resolved(set *meshrootv1.CRLSet, es []*crlEntry) {
	if c == nil || set == nil {
		return
	}
	es = withoutNil(es)
	c.mu.Lock()
	c.set, c.setEnts = set, es
	c.mu.Unlock()
}

// withoutNil returns xs without its nil elements: xs itself when it has
// none.
func withoutNil[T any](xs []*T) []*T {
	for i, x := range xs {
		if x == nil {
			out := append(make([]*T, 0, len(xs)-1), xs[:i]...)
			for _, y := range xs[i+1:] {
				if y != nil {
					out = append(out, y)
				}
			}
			return out
		}
	}
	return xs
}

// fileEntries returns the entries of the CRLs in a ca-crl.pem file that
// parse, in order. The file the agent wrote is recognised as the entries
// it was planned from (pemFile), without a lookup. The result is shared:
// callers must not change it.
func (c *crlCache) fileEntries(data []byte) []*crlEntry {
	ders := c.pemCRLs(data)
	if c != nil {
		c.mu.Lock()
		f := c.file
		c.mu.Unlock()
		if f.canonical && len(f.ders) == len(ders) && (len(ders) == 0 || &f.ders[0] == &ders[0]) {
			return f.entries
		}
	}
	return c.entries(ders)
}

// planned records a planned ca-crl.pem (the PEM blocks of blocks, in
// order) as the last file decoded: the agent's next reading of the
// Secret's file, once it wrote the plan, is recognised by comparing it
// with those blocks (pemFile.matches) instead of decoding ~1,000 CRLs'
// PEM again. A plan that is not written costs one decode at the next
// reading, as before. Nothing is recorded unless every block has its
// entry and PEM (planBlocks made them so); an entry the cache has since
// let go still holds its block. file is the plan's file, the blocks
// joined: the agent writes that very slice into the Secret and reads it
// back from there, so it is recognised by its address (pemFile.seen)
// without comparing ~1 MB with the blocks.
func (c *crlCache) planned(blocks []planBlock, file []byte) {
	if c == nil || len(blocks) == 0 {
		return
	}
	f := pemFile{canonical: true, entries: make([]*crlEntry, len(blocks)), ders: make([][]byte, len(blocks))}
	for i, b := range blocks {
		if b.e == nil || b.pem == nil {
			return
		}
		f.entries[i], f.ders[i] = b.e, b.der
	}
	f.saw(file)
	c.mu.Lock()
	c.file = f
	c.pointIntoFile(blocks, file, f.entries)
	c.mu.Unlock()
}

// pointIntoFile makes each block's PEM, and its entry's, the block's
// bytes in file (the blocks' PEM joined, as the agent writes it) instead
// of a copy of their own. Every agent keeps its last file (the Secret
// holds it), and the blocks kept beside it held the same ~0.5 MB again
// at 1,000 clusters (docs/performance.md, session 30). The slices are
// capped at their block, and no file is changed once made (joinFile), so
// the bytes they see never change. An entry that pointed into the last
// file and is not in this one gets its own copy back: a CRL that left
// the plan but stays in the cache would otherwise keep a whole old file
// alive. Nothing changes unless file is exactly as long as the blocks.
// entries are the blocks' entries, in order (kept: never changed).
// Callers hold c.mu.
func (c *crlCache) pointIntoFile(blocks []planBlock, file []byte, entries []*crlEntry) {
	n := 0
	for _, b := range blocks {
		n += len(b.pem)
	}
	if n != len(file) {
		return
	}
	if c.fileNo++; c.fileNo == 0 {
		c.fileNo++ // 0 means no file
	}
	off := 0
	for i := range blocks {
		b := &blocks[i]
		end := off + len(b.pem)
		b.pem = file[off:end:end]
		b.e.pem, b.e.inFile = b.pem, c.fileNo
		off = end
	}
	for _, e := range c.inFile {
		if e.inFile != 0 && e.inFile != c.fileNo {
			e.pem, e.inFile = bytes.Clone(e.pem), 0
		}
	}
	c.inFile = entries
}

// isFile reports whether blocks are, in order, exactly the CRLs of held,
// a file the cache decoded last and knows as their PEM blocks and nothing
// else (as the agent writes it): then held is the plan's file as it
// stands. A file written otherwise (other blocks, text, line breaks) is
// never reused, so that the plan rewrites it in the agent's form.
func (c *crlCache) isFile(held []byte, blocks []planBlock) bool {
	if c == nil || len(held) == 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	f := &c.file
	if !f.canonical || len(f.entries) != len(blocks) || !f.matches(held) {
		return false
	}
	for i, b := range blocks {
		if b.e != f.entries[i] {
			return false
		}
	}
	return true
}

// entryPEM is e's CRL as a PEM block, encoded once.
func (c *crlCache) entryPEM(e *crlEntry) []byte {
	c.lock()
	b := e.pem
	c.unlock()
	if b != nil {
		return b
	}
	b = crlPEM(e.rl.Raw) // not under the lock
	c.lock()
	if e.pem == nil {
		e.pem = b
	}
	b = e.pem
	c.unlock()
	return b
}

// checkEntry is e's CRL.CheckSignatureFrom(issuer), its result
// remembered in e (also in an entry made without a cache, which the
// caller drops). An issuer the caller did not keep parsed (a fleet
// intermediate) is parsed for the check.
//
// A CRL whose authority key identifier names another key than the
// issuer's subject key identifier is refused without a verification
// (errOtherKey): a cluster's successive intermediates share their subject
// name, so every plan matches each of a cluster's CRLs against each of its
// intermediates, and all but one pair fail. An agent with a new cache (a
// `--once` run, a restart) verified them all: k^2 ECDSA verifications for
// a cluster with k current intermediates (in test/e2e's HA burst tests,
// 50 clusters renewing ten times each, 41 % of the test binary's CPU went
// to CRL verifications, most of them these). A CRL or CA without a key
// identifier is verified as before.
func (c *crlCache) checkEntry(e *crlEntry, issuer *crlCA) error {
	// issuerKey and key hash the name and the key identifier (issuerIDs).
	if len(e.rl.AuthorityKeyId) > 0 && len(issuer.keyID) > 0 && e.issuerKey != issuer.key {
		return errOtherKey
	}
	c.lock()
	if e.has1 && e.checked1.id == issuer.id {
		c.unlock()
		return e.checked1.err
	}
	for _, ch := range e.checkedMore {
		if ch.id == issuer.id {
			c.unlock()
			return ch.err
		}
	}
	c.unlock()
	res := verifyCRL(&e.rl, issuer) // not under the lock: an ECDSA verification
	c.lock()
	ch := checkedIssuer{id: issuer.id, err: res}
	if !e.has1 {
		e.checked1, e.has1 = ch, true
	} else {
		e.checkedMore = append(e.checkedMore, ch)
	}
	c.unlock()
	return res
}

// checked is the results checkEntry remembers for e, in the order made.
func (e *crlEntry) checked() []checkedIssuer {
	if !e.has1 {
		return nil
	}
	return append([]checkedIssuer{e.checked1}, e.checkedMore...)
}

// lock and unlock hold c.mu; without a cache they do nothing.
func (c *crlCache) lock() {
	if c != nil {
		c.mu.Lock()
	}
}

func (c *crlCache) unlock() {
	if c != nil {
		c.mu.Unlock()
	}
}

// errOtherKey is checkEntry's answer for a CRL whose issuer name and
// authority key identifier are not the CA's subject and subject key
// identifier.
var errOtherKey = errors.New("the CRL's issuer name and authority key identifier are not the CA's subject name and subject key identifier")

// verifyCRL checks rl's signature with issuer's key.
func verifyCRL(rl *leanRevocationList, issuer *crlCA) error {
	cert, err := issuer.certificate()
	if err != nil {
		return err
	}
	return rl.CheckSignatureFrom(cert)
}

// parseEntry returns der parsed as an entry: the cache's own, shared
// (callers must not change it), or without a cache one made for the
// caller.
func (c *crlCache) parseEntry(der []byte) (*crlEntry, error) {
	if c == nil {
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			return nil, err
		}
		return newCRLEntry(leanCRL(rl)), nil
	}
	c.mu.Lock()
	e, ok := c.m.get(der)
	c.mu.Unlock()
	if ok {
		return e, nil
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, err
	}
	fresh := newCRLEntry(leanCRL(rl))
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m.get(der); ok { // parsed meanwhile by another caller
		return e, nil
	}
	c.m.put(der, fresh, maxCachedCRLs) // full: a new fleet set, start over
	return fresh, nil
}

// newCRLEntry is rl as an entry, with its issuer's identifiers.
func newCRLEntry(rl leanRevocationList) *crlEntry {
	e := &crlEntry{rl: rl}
	e.issuer, e.issuerKey = issuerIDs(rl.RawIssuer, rl.AuthorityKeyId)
	return e
}

// crlPEM is der as a PEM block of ca-crl.pem.
func crlPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}
