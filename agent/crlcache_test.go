package agent

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math"
	"math/big"
	"runtime"
	"slices"
	"testing"
	"time"
	"weak"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
)

// TestCRLCacheParsesOnce: the same DER is parsed once and found again;
// another DER is parsed; junk is an error and not kept; a nil cache
// parses every time.
func TestCRLCacheParsesOnce(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "issuer"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	issuer, _ := x509.ParseCertificate(der)
	mk := func(n int64) []byte {
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(n), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour)},
			issuer, k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	a, b := mk(1), mk(2)
	var c crlCache
	e1, err := c.parseEntry(a)
	if err != nil {
		t.Fatal(err)
	}
	if e2, _ := c.parseEntry(append([]byte(nil), a...)); e2 != e1 {
		t.Error("the same CRL was parsed again")
	}
	if e3, _ := c.parseEntry(b); e3 == e1 || e3.rl.Number.toBig().Int64() != 2 {
		t.Errorf("another CRL: %v", e3.rl.Number)
	}
	if _, err := c.parseEntry([]byte{1, 2, 3}); err == nil || c.m.len() != 2 {
		t.Errorf("junk: %v, %d cached", err, c.m.len())
	}
	// Signatures: the result is remembered, a failure too (a cluster's
	// successive intermediates share a name: each plan tries a CRL against
	// both), and a failure stays a failure.
	// The issuer as the fleet's intermediates are kept: parsed again for the check.
	if err := c.checkEntry(e1, crlCAOf(issuer, false)); err != nil {
		t.Errorf("checkEntry by its issuer: %v", err)
	}
	if ch := c.entry(a).checked(); len(ch) != 1 || ch[0].id != sha256.Sum256(issuer.Raw) || ch[0].err != nil {
		t.Errorf("success remembered: %+v", ch)
	}
	// A CA with the issuer's key identifier but another key: verified,
	// and the failure remembered.
	other := caWithKeyID(t, "issuer", issuer.SubjectKeyId)
	for range 2 {
		if err := c.checkEntry(e1, crlCAOf(other, true)); err == nil {
			t.Error("a CRL checked out against another certificate")
		}
	}
	if ch := c.entry(a).checked(); len(ch) != 2 || ch[1].id != sha256.Sum256(other.Raw) || ch[1].err == nil {
		t.Errorf("failure remembered: %+v, want 2 issuers checked, the second failed", ch)
	}
	if ch := c.entry(b).checked(); len(ch) != 0 {
		t.Errorf("checks remembered for the CRL never checked: %+v", ch)
	}
	// The cache keeps the fields the agent reads (leanRevocationList has no
	// revoked entries: a root CRL of 10,000 entries parses to megabytes of
	// them), the same as the whole CRL's.
	revoked, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(3), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: big.NewInt(7), RevocationTime: time.Now()}}}, issuer, k)
	if err != nil {
		t.Fatal(err)
	}
	full, _ := x509.ParseRevocationList(revoked)
	le, err := c.parseEntry(revoked)
	if err != nil {
		t.Fatal(err)
	}
	lean := le.rl
	if lean.Number.cmp(numberOf(full.Number)) != 0 || !lean.NextUpdate.Equal(full.NextUpdate) || !lean.ThisUpdate.Equal(full.ThisUpdate) ||
		!bytes.Equal(lean.RawIssuer, full.RawIssuer) || !bytes.Equal(lean.AuthorityKeyId, full.AuthorityKeyId) || !bytes.Equal(lean.Raw, revoked) {
		t.Errorf("cached CRL: %+v\nwant the fields of %+v without its entries", lean, full)
	}
	if err := c.checkEntry(le, crlCAOf(issuer, true)); err != nil {
		t.Errorf("the cached CRL's signature: %v", err)
	}
	// ca-crl.pem's CRLs that the cache holds come back as the cache's
	// bytes, not a second decoded copy, and as the cache's entries.
	file := append(block(a), block(revoked)...)
	ders := c.pemCRLs(file)
	if len(ders) != 2 || &ders[0][0] != &c.entry(a).rl.Raw[0] || &ders[1][0] != &lean.Raw[0] {
		t.Error("ca-crl.pem's CRLs were kept as decoded copies, not the cache's")
	}
	if es := c.fileEntries(append([]byte(nil), file...)); len(es) != 2 || es[0] != e1 || es[1] != le {
		t.Errorf("ca-crl.pem's entries: %v, want the cache's two", es)
	}
	var none *crlCache
	if e, err := none.parseEntry(a); err != nil || e == e1 {
		t.Errorf("nil cache: %v, shared %v", err, e == e1)
	}
	// A CA with another key identifier is refused without a verification
	// and nothing is remembered.
	if err := c.checkEntry(e1, crlCAOf(testCert(t), true)); !errors.Is(err, errOtherKey) || len(c.entry(a).checked()) != 2 {
		t.Errorf("another key identifier: %v, %d remembered; want errOtherKey and still 2", err, len(c.entry(a).checked()))
	}
	// Without a cache, a check is remembered in the caller's entry only.
	mine, _ := none.parseEntry(a)
	if err := none.checkEntry(mine, crlCAOf(other, true)); err == nil || len(mine.checked()) != 1 || len(c.entry(a).checked()) != 2 {
		t.Errorf("nil cache check: %v, %d remembered, %d in the cache", err, len(mine.checked()), len(c.entry(a).checked()))
	}
}

// TestCRLCacheSetEntries: a bundle's CRL set is resolved to the cache's
// entries once, and found again by the set itself; another set (the next
// delta's, even with the same CRLs) is resolved anew; junk is left out.
func TestCRLCacheSetEntries(t *testing.T) {
	issuer, k := testIssuer(t)
	mk := func(n int64) []byte { return testCRL(t, issuer, k, n, time.Hour) }
	a, b := mk(1), mk(2)
	var c crlCache
	set := &meshrootv1.CRLSet{Crls: [][]byte{a, {1, 2, 3}, b}}
	es := c.setEntries(set)
	if len(es) != 2 || es[0].rl.Number.toBig().Int64() != 1 || es[1].rl.Number.toBig().Int64() != 2 {
		t.Fatalf("entries of the set: %v, want the two CRLs in order", es)
	}
	if again := c.setEntries(set); &again[0] != &es[0] {
		t.Error("the same set was resolved again")
	}
	// The next delta's set: a new message with b, then a.
	next := &meshrootv1.CRLSet{Crls: [][]byte{append([]byte(nil), b...), a}}
	got := c.setEntries(next)
	if len(got) != 2 || got[0] != es[1] || got[1] != es[0] {
		t.Errorf("the next set: %v, want the cache's entries of b and a", got)
	}
	if again := c.setEntries(set); &again[0] == &got[0] || again[0] != es[0] {
		t.Error("the earlier set was answered with the later set's entries")
	}
	var none *crlCache
	if got := none.setEntries(set); len(got) != 2 || got[0] == es[0] {
		t.Errorf("nil cache: %v", got)
	}
	if got := c.setEntries(nil); len(got) != 0 {
		t.Errorf("no set: %v", got)
	}
}

// TestCRLCacheFileNotKept: a ca-crl.pem made of the cache's CRLs' blocks
// (as the agent writes it) is recognised again without the cache keeping
// the file; a change of one byte is decoded afresh; a file with anything
// else in it is remembered as passed, and still recognised.
func TestCRLCacheFileNotKept(t *testing.T) {
	issuer, k := testIssuer(t)
	mk := func(n int64) []byte { return testCRL(t, issuer, k, n, time.Hour) }
	one, two := mk(1), mk(2)
	file := append(block(one), block(two)...)
	var c crlCache
	first := c.pemCRLs(append([]byte(nil), file...))
	if len(first) != 2 || !bytes.Equal(first[0], one) || !bytes.Equal(first[1], two) {
		t.Fatalf("decoded %d CRLs", len(first))
	}
	if !c.file.canonical || c.file.src != nil {
		t.Errorf("the agent's own file was kept (canonical %v, %d bytes)", c.file.canonical, len(c.file.src))
	}
	again := c.pemCRLs(append([]byte(nil), file...)) // the next read of the Secret: another copy
	if len(again) != 2 || &again[0] != &first[0] {
		t.Error("the same file was decoded again")
	}
	changed := append([]byte(nil), file...)
	changed[len(block(one))+40] ^= 1 // inside the second block's base64
	if got := c.pemCRLs(changed); len(got) == 2 && &got[0] == &first[0] {
		t.Error("a changed file was taken for the one decoded before")
	}
	// Other text around the blocks: not the cache's blocks, kept as passed.
	odd := append([]byte("# written by hand\n"), file...)
	got := c.pemCRLs(odd)
	if len(got) != 2 || c.file.canonical || &c.file.src[0] != &odd[0] {
		t.Errorf("a file with a comment: %d CRLs, canonical %v", len(got), c.file.canonical)
	}
	if again := c.pemCRLs(odd); &again[0] != &got[0] {
		t.Error("the file with a comment was decoded again")
	}
	if got := c.pemCRLs(file); !c.file.canonical || len(got) != 2 {
		t.Error("back to the agent's file: not recognised as the cache's blocks")
	}
	if got := c.pemCRLs(nil); len(got) != 0 || got == nil {
		t.Errorf("no file: %v", got)
	}
}

// TestCRLCacheFileSeen: the slice found to be the decoded file is
// recognised again without comparing it (a reconcile passes the same
// Secret's file three or four times), but only that slice: an equal copy
// is compared, a copy with a changed byte is decoded afresh, and the
// cache does not keep the slice alive.
func TestCRLCacheFileSeen(t *testing.T) {
	issuer, k := testIssuer(t)
	one, two := testCRL(t, issuer, k, 1, time.Hour), testCRL(t, issuer, k, 2, time.Hour)
	file := append(block(one), block(two)...)
	var c crlCache
	read := append([]byte(nil), file...)
	first := c.pemCRLs(read)
	if len(first) != 2 {
		t.Fatalf("decoded %d CRLs", len(first))
	}
	// The contract is that callers never change a file they passed;
	// breaking it here shows that the same slice is not compared again.
	read[len(read)/2] ^= 1
	if again := c.pemCRLs(read); len(again) != 2 || &again[0] != &first[0] {
		t.Error("the same slice was compared (and decoded) again")
	}
	read[len(read)/2] ^= 1
	changed := append([]byte(nil), file...)
	changed[len(block(one))+40] ^= 1
	if got := c.pemCRLs(changed); len(got) == 2 && &got[0] == &first[0] {
		t.Error("a changed copy of the same length was taken for the file")
	}
	if got := c.pemCRLs(append([]byte(nil), file...)); len(got) != 2 || !bytes.Equal(got[1], two) {
		t.Errorf("an equal copy: %d CRLs", len(got))
	}
	// A shorter slice of the seen one starts at the same byte: compared,
	// and it is not the file.
	if got := c.pemCRLs(read[:len(block(one))]); len(got) != 1 {
		t.Errorf("the seen slice's first block alone: %d CRLs, want 1", len(got))
	}
	// The cache holds the seen slice weakly: once nothing else does, it
	// is freed.
	var c2 crlCache
	gone := func() weak.Pointer[byte] {
		big := append(append([]byte(nil), file...), file...)
		c2.pemCRLs(big)
		return weak.Make(&big[0])
	}()
	runtime.GC()
	runtime.GC()
	if gone.Value() != nil {
		t.Error("the cache keeps the file it saw alive")
	}
	if c2.file.seenLen != 2*len(file) {
		t.Errorf("seen length %d, want %d", c2.file.seenLen, 2*len(file))
	}
}

// TestCRLCachePEMMemo: the decoded ca-crl.pem is reused only for the same
// content: another file is decoded afresh, and going back decodes the
// first again; a CRL's PEM block is what pem.EncodeToMemory makes.
func TestCRLCachePEMMemo(t *testing.T) {
	a := append(block([]byte("one")), block([]byte("two"))...)
	b := block([]byte("three"))
	var c crlCache
	for i, tc := range []struct {
		file []byte
		want []string
	}{{a, []string{"one", "two"}}, {a, []string{"one", "two"}}, {b, []string{"three"}}, {a, []string{"one", "two"}}, {nil, nil}} {
		var got []string
		for _, d := range c.pemCRLs(append([]byte(nil), tc.file...)) {
			got = append(got, string(d))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("read %d: %q, want %q", i, got, tc.want)
		}
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "issuer"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	issuer, _ := x509.ParseCertificate(der)
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour)}, issuer, k)
	if err != nil {
		t.Fatal(err)
	}
	e, err := c.parseEntry(crl)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if got := c.entryPEM(e); !bytes.Equal(got, block(crl)) {
			t.Fatalf("entryPEM = %q, want %q", got, block(crl))
		}
	}
}

// block is der as a PEM block of ca-crl.pem.
func block(der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}) }

// TestCRLCachePlannedFile: the file a plan makes is recognised at the next
// reading of the Secret without decoding it, and a file that differs from
// the plan by one byte is still decoded afresh.
func TestCRLCachePlannedFile(t *testing.T) {
	issuer, k := testIssuer(t)
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(7), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour)}, issuer, k)
	if err != nil {
		t.Fatal(err)
	}
	var c crlCache
	p := planCRLFile(&c, crlCAs([]*x509.Certificate{issuer}), c.entries([][]byte{der}), time.Now())
	if p.PEM == nil || len(p.Missing) != 0 {
		t.Fatalf("plan: %d bytes, missing %v", len(p.PEM), p.Missing)
	}
	if !c.file.canonical || !c.file.matches(p.PEM) {
		t.Fatal("the planned file was not recorded as the last file decoded")
	}
	// The Secret as read back: another copy of the same bytes.
	got := c.pemCRLs(append([]byte(nil), p.PEM...))
	if len(got) != 1 || &got[0][0] != &c.file.entries[0].rl.Raw[0] {
		t.Fatal("the written plan was decoded again, or came back as another copy")
	}
	changed := append([]byte(nil), p.PEM...)
	changed[40] ^= 1
	if c.file.matches(changed) {
		t.Fatal("a file one byte off the plan matches it")
	}
	if got := c.pemCRLs(changed); len(got) == 1 && bytes.Equal(got[0], der) {
		t.Fatal("a file one byte off the plan decoded to the plan's CRL")
	}
}

// TestCandidatesOnce: an entry the set and the file share is one
// candidate; the next plan takes it again; a CRL without a number is not
// a candidate.
func TestCandidatesOnce(t *testing.T) {
	issuer, k := testIssuer(t)
	now := time.Now()
	mk := func(n int64) []byte { return testCRL(t, issuer, k, n, 2*time.Hour) }
	var c crlCache
	es := c.entries([][]byte{mk(1), mk(2)})
	noNumber, err := c.parseEntry(mk(3))
	if err != nil {
		t.Fatal(err)
	}
	noNumber.rl.Number = crlNumber{}
	all := []*crlEntry{es[0], es[1], noNumber, es[1], es[0]}
	for plan := range 2 {
		got := candidates(all, now)
		if len(got) != 2 || got[0].e != es[0] || got[1].e != es[1] {
			t.Fatalf("plan %d: %d candidates, want the two numbered entries once each", plan, len(got))
		}
		if got[0].tier != 2 {
			t.Errorf("plan %d: tier %d for a CRL with two hours left, want 2", plan, got[0].tier)
		}
	}
}

// TestPlanKeepsUnchangedFile: when a published plan picks exactly the CRLs
// of the file the Secret holds (the roots changed, not the CRLs), the
// plan's file is that slice itself, not a new copy; a new CRL, or a file
// with anything besides the agent's blocks, makes a new file.
func TestPlanKeepsUnchangedFile(t *testing.T) {
	a, ak := testIssuer(t)
	b, bk := testIssuer(t)
	a1, b1 := testCRL(t, a, ak, 1, 2*time.Hour), testCRL(t, b, bk, 1, 3*time.Hour)
	cas := crlCAs([]*x509.Certificate{a, b})
	var c crlCache
	now := time.Now()
	first := planPublishedCRLFile(&c, cas, c.entries([][]byte{a1, b1}), nil, now)
	if len(first.PEM) == 0 || len(first.Missing) != 0 {
		t.Fatalf("first plan: %d bytes, missing %v", len(first.PEM), first.Missing)
	}
	held := append([]byte(nil), first.PEM...) // the Secret as read back
	again := planPublishedCRLFile(&c, cas, c.entries([][]byte{b1, a1}), held, now)
	if !bytes.Equal(again.PEM, held) || &again.PEM[0] != &held[0] {
		t.Error("the same CRLs planned a new copy of the file the Secret holds")
	}
	if want := first.MinNextUpdate; !again.MinNextUpdate.Equal(want) {
		t.Errorf("kept file: earliest nextUpdate %v, want %v", again.MinNextUpdate, want)
	}

	a2 := testCRL(t, a, ak, 2, 3*time.Hour)
	next := planPublishedCRLFile(&c, cas, c.entries([][]byte{a2, b1}), held, now)
	if len(next.PEM) == 0 || &next.PEM[0] == &held[0] || !bytes.Contains(next.PEM, block(a2)) || bytes.Contains(next.PEM, block(a1)) {
		t.Error("a newer CRL did not make a new file with it in place of the old one")
	}

	odd := append([]byte("# written by hand\n"), held...)
	fixed := planPublishedCRLFile(&c, cas, c.entries([][]byte{a1, b1}), odd, now)
	if !bytes.Equal(fixed.PEM, held) {
		t.Errorf("a file with a comment was kept (%d bytes), not rewritten in the agent's form", len(fixed.PEM))
	}
}

// caWithKeyID is a self-signed CA named cn whose subject key identifier is
// keyID, with a key of its own.
func caWithKeyID(t *testing.T, cn string, keyID []byte) *x509.Certificate {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, SubjectKeyId: keyID, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// TestCRLOtherKeyIDNotVerified: a CRL whose authority key identifier is not
// its issuer's subject key identifier is refused by checkEntry without an
// ECDSA verification, even when the issuer's key did sign it (the
// signature would check out: the refusal comes before it); a CRL without
// an authority key identifier, and a CA without a subject key identifier,
// are verified as before.
func TestCRLOtherKeyIDNotVerified(t *testing.T) {
	issuer, key := testIssuer(t)
	// The same CA as CreateRevocationList sees it, claiming another key
	// identifier: the CRL names it, signed with the CA's real key.
	claimed := *issuer
	claimed.SubjectKeyId = bytes.Repeat([]byte{0x42}, len(issuer.SubjectKeyId))
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour)}, &claimed, key)
	if err != nil {
		t.Fatal(err)
	}
	var c crlCache
	e, err := c.parseEntry(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.rl.CheckSignatureFrom(issuer); err != nil {
		t.Fatalf("the CRL's signature does not check out against its CA (%v): the test would not show the verification was skipped", err)
	}
	if err := c.checkEntry(e, crlCAOf(issuer, true)); !errors.Is(err, errOtherKey) {
		t.Errorf("checkEntry of a CRL naming another key identifier: %v, want errOtherKey", err)
	}
	if len(e.checked()) != 0 {
		t.Errorf("checks remembered: %+v, want none (no verification was made)", e.checked())
	}
	// A CA without a subject key identifier: the signature decides.
	noKeyID := crlCAOf(issuer, true)
	noKeyID.keyID = nil
	if err := c.checkEntry(e, noKeyID); err != nil {
		t.Errorf("checkEntry by a CA without a key identifier: %v, want the signature to decide (valid)", err)
	}
	// A CRL without an authority key identifier: the signature decides.
	noAKI := e.rl
	noAKI.AuthorityKeyId = nil
	bare := newCRLEntry(noAKI)
	if err := c.checkEntry(bare, crlCAOf(issuer, true)); err != nil {
		t.Errorf("checkEntry of a CRL without an authority key identifier: %v, want the signature to decide (valid)", err)
	}
	if err := c.checkEntry(bare, crlCAOf(caWithKeyID(t, "issuer", issuer.SubjectKeyId), true)); err == nil || errors.Is(err, errOtherKey) {
		t.Errorf("checkEntry of a CRL without an authority key identifier by another key: %v, want a signature failure", err)
	}
}

// TestCRLNumber: numbers held in 64 bits and as big.Int compare as
// big.Int does, across the two forms; a missing number compares as 0 and
// is not a uint64; a negative one is kept as big.Int.
func TestCRLNumber(t *testing.T) {
	huge, _ := new(big.Int).SetString("123456789012345678901234567890", 10)
	maxU := new(big.Int).SetUint64(math.MaxUint64)
	nums := []*big.Int{big.NewInt(-5), nil, big.NewInt(0), big.NewInt(7), maxU, huge}
	for i, a := range nums {
		for j, b := range nums {
			av, bv := a, b
			if av == nil {
				av = new(big.Int)
			}
			if bv == nil {
				bv = new(big.Int)
			}
			if got, want := numberOf(a).cmp(numberOf(b)), av.Cmp(bv); got != want {
				t.Errorf("cmp(%v, %v) = %d, want %d (%d, %d)", a, b, got, want, i, j)
			}
		}
	}
	if n, ok := numberOf(maxU).uint64(); !ok || n != math.MaxUint64 {
		t.Errorf("2^64-1: %d, %v", n, ok)
	}
	for _, n := range []*big.Int{nil, big.NewInt(-5), huge} {
		if v, ok := numberOf(n).uint64(); ok {
			t.Errorf("%v as uint64: %d, want none", n, v)
		}
	}
	if numberOf(nil).ok || !numberOf(big.NewInt(0)).ok {
		t.Error("ok: a missing number must not be ok, 0 must be")
	}
	if got := numberOf(huge).toBig(); got.Cmp(huge) != 0 {
		t.Errorf("toBig of a 97-bit number: %v", got)
	}
}

// entry is the cache's entry for der, or nil.
func (c *crlCache) entry(der []byte) *crlEntry {
	e, _ := c.m.get(der)
	return e
}
