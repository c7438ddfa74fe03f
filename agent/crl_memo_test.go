package agent

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"maps"
	"math/big"
	mrand "math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/meshroot/meshroot/keys"
)

// memoFleet is a small fleet made to trouble the plan: roots of one name
// (one a copy of another with the same key), clusters with several
// intermediates of one name (two of them with one key and different
// lifetimes), and CRLs of every tier with ties, forgeries and nextUpdates
// that cross tiers as the test's clock runs.
type memoFleet struct {
	t0     time.Time
	roots  []*x509.Certificate
	inters []*x509.Certificate
	crls   [][]byte
}

func newMemoFleet(t *testing.T, rnd *mrand.Rand) memoFleet {
	t.Helper()
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	serial := int64(1)
	mk := func(cn string, key crypto.Signer, notAfter time.Time, parent *x509.Certificate, parentKey crypto.Signer) *x509.Certificate {
		serial++
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: t0.Add(-time.Hour), NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	gen := func() crypto.Signer {
		k, err := keys.ECP256.Generate()
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	f := memoFleet{t0: t0}
	crlOf := func(c *x509.Certificate, k crypto.Signer, n int64, this, next time.Time) {
		f.crls = append(f.crls, memoCRL(t, c, k, n, this, next))
	}
	// nextUpdates: spread over the test's hours (tiers change as its clock
	// runs), past, far, and the CA's own end.
	crlsOf := func(c *x509.Certificate, k crypto.Signer) {
		for n := int64(1); n <= 4; n++ {
			var next time.Time
			switch rnd.IntN(4) {
			case 0:
				next = t0.Add(time.Duration(rnd.IntN(16)) * 37 * time.Minute)
			case 1:
				next = t0.Add(7 * 24 * time.Hour)
			case 2:
				next = t0.Add(-time.Hour)
			default:
				next = c.NotAfter
			}
			crlOf(c, k, n, t0.Add(-2*time.Hour), next)
			if rnd.IntN(4) == 0 { // a tie: the same number and nextUpdate, another CRL
				crlOf(c, k, n, t0.Add(-3*time.Hour), next)
			}
		}
		if rnd.IntN(3) == 0 { // a forgery naming c, signed by another key
			other := gen()
			der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(9), ThisUpdate: t0, NextUpdate: t0.Add(48 * time.Hour)},
				&x509.Certificate{RawSubject: c.RawSubject, Subject: c.Subject, KeyUsage: x509.KeyUsageCRLSign, SubjectKeyId: c.SubjectKeyId}, other)
			if err != nil {
				t.Fatal(err)
			}
			f.crls = append(f.crls, der)
		}
	}
	rk, rk2 := gen(), gen()
	r1 := mk("root", rk, t0.Add(90*24*time.Hour), nil, nil)
	r1x := mk("root", rk, t0.Add(3*time.Hour), nil, nil) // r1's key, another lifetime
	r2 := mk("root", rk2, t0.Add(90*24*time.Hour), nil, nil)
	f.roots = []*x509.Certificate{r1, r1x, r2}
	crlsOf(r1, rk)
	crlsOf(r2, rk2)
	for i := range 8 {
		name := fmt.Sprintf("cluster-%d", i)
		for range 1 + rnd.IntN(3) {
			k := gen()
			parent, pk := r1, rk
			if rnd.IntN(3) == 0 {
				parent, pk = r2, rk2
			}
			end := t0.Add(time.Duration(1+rnd.IntN(12)) * time.Hour)
			c := mk(name, k, end, parent, pk)
			f.inters = append(f.inters, c)
			crlsOf(c, k)
			if rnd.IntN(4) == 0 { // the same key again, another lifetime
				c2 := mk(name, k, end.Add(time.Duration(rnd.IntN(5))*time.Hour), parent, pk)
				f.inters = append(f.inters, c2)
				crlsOf(c2, k)
			}
		}
	}
	return f
}

// TestPlanFromLastMatchesWhole: a published ca-crl.pem planned from the
// last plan (crl_memo.go) is the plan made whole, byte for byte, with the
// same missing CAs and earliest nextUpdate, change after change of a
// fleet whose CRLs come and go, whose CAs come and go, whose roots are
// read anew at every change, whose CRLs change tier as the clock runs,
// and whose file is now and then not the last plan. And most plans are
// made from the last one (the test would pass with none). Planning never
// writes into a file written before: half the time it starts from the
// slice the last plan wrote, as from the Secret the agent knows.
func TestPlanFromLastMatchesWhole(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rnd := mrand.New(mrand.NewPCG(seed, 7))
			f := newMemoFleet(t, rnd)
			var memo, whole crlCache
			stable := map[*x509.Certificate]*crlCA{} // as certCache keeps the fleet's intermediates
			interCA := func(c *x509.Certificate) *crlCA {
				if stable[c] == nil {
					stable[c] = crlCAOf(c, false)
				}
				return stable[c]
			}
			pick := func(n int) [][]byte {
				out := make([][]byte, n)
				for i := range out {
					out[i] = f.crls[rnd.IntN(len(f.crls))]
				}
				return out
			}
			set := pick(len(f.crls) / 2)
			inters := slices.Clone(f.inters[:len(f.inters)/2])
			roots := []*x509.Certificate{f.roots[0]}
			now := f.t0
			var held, before, heldCopy, beforeCopy []byte
			inFile := 0 // CRLs seen pointing into the last file, over the steps
			steps := 400
			for step := range steps {
				// The change.
				for range rnd.IntN(3) {
					if len(set) > 0 {
						k := rnd.IntN(len(set))
						set = slices.Delete(set, k, k+1)
					}
				}
				set = append(set, pick(rnd.IntN(3))...)
				if rnd.IntN(10) == 0 {
					set = slices.Insert(set, rnd.IntN(len(set)+1), pick(1)...)
				}
				if rnd.IntN(25) == 0 {
					rnd.Shuffle(len(set), func(i, j int) { set[i], set[j] = set[j], set[i] })
				}
				if rnd.IntN(5) == 0 && len(inters) > 0 {
					k := rnd.IntN(len(inters))
					inters = slices.Delete(inters, k, k+1)
				}
				if rnd.IntN(5) == 0 {
					inters = slices.Insert(inters, rnd.IntN(len(inters)+1), f.inters[rnd.IntN(len(f.inters))])
				}
				if rnd.IntN(12) == 0 {
					roots = nil
					for _, r := range f.roots {
						if rnd.IntN(2) == 0 {
							roots = append(roots, r)
						}
					}
					rnd.Shuffle(len(roots), func(i, j int) { roots[i], roots[j] = roots[j], roots[i] })
				}
				switch r := rnd.IntN(40); {
				case r == 0:
					now = now.Add(-time.Duration(rnd.IntN(10)) * time.Minute) // the clock stepped back
				case r < 4:
					now = now.Add(time.Duration(rnd.IntN(90)) * time.Minute)
				default:
					now = now.Add(time.Duration(rnd.IntN(120)) * time.Second)
				}
				file := held
				switch rnd.IntN(20) {
				case 0:
					file = before // an older file
				case 1:
					file = nil
				case 2:
					file = memoPEM(pick(rnd.IntN(6))) // someone else's
				}
				if rnd.IntN(2) == 0 {
					// Read from the API: a new copy. Otherwise the Secret
					// the agent knows: the slice it wrote, still stored.
					file = bytes.Clone(file)
				}
				crls := set
				if rnd.IntN(5) == 0 {
					crls = append(slices.Clone(set), pick(1)...) // the cluster's own CRL, signed here
				}

				// The CAs as planCRL makes them: the roots read anew, the
				// fleet's intermediates as certCache keeps them, the chain
				// read anew.
				cas := crlCAs(roots)
				for _, c := range inters {
					cas = append(cas, interCA(c))
				}
				if len(inters) > 0 {
					cas = append(cas, crlCAs(inters[:1])...)
				}

				got := planPublishedCRLFile(&memo, cas, memo.entries(crls), file, now)
				whole.forgetPlan()
				want := planPublishedCRLFile(&whole, cas, whole.entries(crls), bytes.Clone(file), now)
				if !bytes.Equal(got.PEM, want.PEM) {
					t.Fatalf("step %d: the plan from the last one has %d CRLs, the whole plan %d:\nfrom the last: %v\nwhole:         %v",
						step, len(pemCRLs(got.PEM)), len(pemCRLs(want.PEM)), crlNumbersOf(t, got.PEM), crlNumbersOf(t, want.PEM))
				}
				if !slices.Equal(got.Missing, want.Missing) {
					t.Fatalf("step %d: missing %q from the last plan, %q whole", step, got.Missing, want.Missing)
				}
				if !got.MinNextUpdate.Equal(want.MinNextUpdate) {
					t.Fatalf("step %d: earliest nextUpdate %v from the last plan, %v whole", step, got.MinNextUpdate, want.MinNextUpdate)
				}
				if a, w := appliedRootCRLs(&memo, got.PEM, roots), AppliedRootCRLs(got.PEM, roots); !maps.Equal(a, w) {
					t.Fatalf("step %d: root CRLs applied %v from the plan, %v from the file", step, a, w)
				}
				// The files written stay as written: the known Secret and
				// the API's stored one (kubefake's ShareData) hold them.
				if !bytes.Equal(held, heldCopy) || !bytes.Equal(before, beforeCopy) {
					t.Fatalf("step %d: planning changed a file written before", step)
				}
				// Each CRL's PEM in the cache is its own or the last
				// file's (pointIntoFile), never an older file's.
				for _, e := range memo.m.m {
					if e.pem == nil {
						continue
					}
					if !bytes.Equal(e.pem, crlPEM(e.rl.Raw)) {
						t.Fatalf("step %d: a cached CRL's PEM block is not its own", step)
					}
					if e.inFile != 0 && e.inFile != memo.fileNo {
						t.Fatalf("step %d: a CRL's PEM is a slice of file %d, not of the last (%d): an old file kept alive", step, e.inFile, memo.fileNo)
					}
					if e.inFile != 0 {
						inFile++
					}
				}
				before, held = held, got.PEM
				beforeCopy, heldCopy = heldCopy, bytes.Clone(got.PEM)
			}
			if inFile == 0 {
				t.Fatalf("no CRL's PEM was ever the written file's bytes: the test does not test that")
			}
			if memo.memo.fromLast < steps/2 {
				t.Fatalf("only %d of %d plans were made from the last one (%d whole): the test does not test that", memo.memo.fromLast, steps, memo.memo.whole)
			}
			if memo.grewInPlace == 0 {
				// Most steps here take CRLs out; only those that only add
				// one (2-14 of 400 with these seeds) grow the file in place.
				t.Fatalf("none of %d files was written in the last one's room: the test does not test that", steps)
			}
			t.Logf("%d plans from the last one, %d whole; %d files in the last one's room", memo.memo.fromLast, memo.memo.whole, memo.grewInPlace)
		})
	}
}

// crlNumbersOf lists a file's CRLs as issuer/number/nextUpdate, for
// failure messages.
func crlNumbersOf(t *testing.T, p []byte) []string {
	var out []string
	for _, der := range pemCRLs(p) {
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatalf("planned CRL: %v", err)
		}
		out = append(out, fmt.Sprintf("%s/%s/%s", rl.Issuer.CommonName, rl.Number, rl.NextUpdate.Format("15:04")))
	}
	return out
}

// memoPEM is ders as a ca-crl.pem file.
func memoPEM(ders [][]byte) []byte {
	var b []byte
	for _, d := range ders {
		b = append(b, crlPEM(d)...)
	}
	return b
}

// TestAlignKeys: align matches two lists in order and gives the added
// elements keys between their neighbours', refusing when none is left.
func TestAlignKeys(t *testing.T) {
	e := make([]*crlEntry, 6)
	for i := range e {
		e[i] = &crlEntry{}
	}
	a := []*crlEntry{e[0], e[1], e[2], e[3]}
	keys := []int64{10, 20, 30, 40}
	var nk []int64
	added, removed, ok := align(a, []*crlEntry{e[0], e[4], e[2], e[3], e[5]}, keys, &nk)
	if !ok || !slices.Equal(added, []int{1, 4}) || !slices.Equal(removed, []int{1}) {
		t.Fatalf("added %v removed %v ok %v", added, removed, ok)
	}
	if !slices.IsSorted(nk) || nk[0] != 10 || nk[2] != 30 || nk[3] != 40 || nk[1] <= 10 || nk[1] >= 30 || nk[4] <= 40 {
		t.Fatalf("keys %v", nk)
	}
	if _, _, ok := align([]*crlEntry{e[0], e[1]}, []*crlEntry{e[0], e[4], e[5], e[1]}, []int64{10, 12}, &nk); ok {
		t.Fatal("two keys put between 10 and 12")
	}
	if _, _, ok := align([]*crlEntry{e[0], e[1]}, []*crlEntry{e[0], e[4], e[1]}, []int64{10, 12}, &nk); !ok || nk[1] != 11 {
		t.Fatalf("one key between 10 and 12: %v %v", ok, nk)
	}
}

// TestPlanFromLastTierOfAddedCRL: a CRL added by a change limits how long
// the plan made from it holds. Here the newer of a CA's two CRLs, chosen
// when it arrives, nears its nextUpdate 30 minutes later; from then the
// older one, good for days, is the CA's current CRL, although nothing
// else changed.
func TestPlanFromLastTierOfAddedCRL(t *testing.T) {
	t0 := time.Now()
	root, rk := confirmCA(t, "root", nil, nil)
	east, ek := confirmCA(t, "east", root, rk)
	rootCRL := memoCRL(t, root, rk, 1, t0, t0.Add(7*24*time.Hour))
	older := memoCRL(t, east, ek, 1, t0, t0.Add(7*24*time.Hour))
	newer := memoCRL(t, east, ek, 2, t0, t0.Add(90*time.Minute))
	eastCA := crlCAOf(east, false) // the fleet's intermediate, kept from change to change
	var c crlCache
	plan := func(held []byte, now time.Time, ders ...[]byte) CRLPlan {
		cas := append(crlCAs([]*x509.Certificate{root}), eastCA)
		return planPublishedCRLFile(&c, cas, c.entries(ders), bytes.Clone(held), now)
	}
	p := plan(nil, t0, rootCRL, older)
	p = plan(p.PEM, t0.Add(time.Minute), rootCRL, older, newer)
	if got := crlNumbersOf(t, p.PEM); len(got) != 2 || got[1] != "east/2/"+t0.Add(90*time.Minute).Format("15:04") {
		t.Fatalf("after the newer CRL arrived the file holds %v", got)
	}
	if c.memo.fromLast != 1 {
		t.Fatalf("%d plans from the last one, want 1", c.memo.fromLast)
	}
	p = plan(p.PEM, t0.Add(45*time.Minute), rootCRL, older, newer)
	if got := crlNumbersOf(t, p.PEM); len(got) != 2 || got[1] != "east/1/"+t0.Add(7*24*time.Hour).Format("15:04") {
		t.Fatalf("with the newer CRL 45 minutes from its nextUpdate the file holds %v, want the older one", got)
	}
}

func memoCRL(t *testing.T, issuer *x509.Certificate, key crypto.Signer, n int64, this, next time.Time) []byte {
	t.Helper()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(n), ThisUpdate: this, NextUpdate: next}, issuer, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
