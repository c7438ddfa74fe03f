package agent

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
)

func TestApplyCRLDelta(t *testing.T) {
	a, b, c := []byte("crl a"), []byte("crl b"), []byte("crl c")
	i1, i2 := []byte("inter 1"), []byte("inter 2")
	key := func(d []byte) []byte { h := sha256.Sum256(d); return h[:] }
	base := &meshrootv1.CRLSet{Crls: [][]byte{a, b}, Intermediates: [][]byte{i1}, Missing: []string{"x"}}

	// A whole set replaces whatever was held.
	whole := &meshrootv1.CRLSet{Crls: [][]byte{c}}
	if got, err := ApplyCRLDelta(base, whole); err != nil || got != whole {
		t.Fatalf("whole set: %v, %v", got, err)
	}

	// Removed by key, added appended, order of what stays kept, missing
	// taken from the delta.
	got, err := ApplyCRLDelta(base, &meshrootv1.CRLSet{Delta: true, Crls: [][]byte{c}, Intermediates: [][]byte{i2},
		Removed: [][]byte{key(a), key(i1)}})
	if err != nil {
		t.Fatal(err)
	}
	if s := string(join(got.GetCrls())); s != "crl b|crl c" {
		t.Errorf("CRLs after the delta: %s, want crl b|crl c", s)
	}
	if s := string(join(got.GetIntermediates())); s != "inter 2" {
		t.Errorf("intermediates after the delta: %s, want inter 2", s)
	}
	if len(got.GetMissing()) != 0 {
		t.Errorf("missing after the delta: %v, want the delta's (none)", got.GetMissing())
	}
	if len(base.GetCrls()) != 2 {
		t.Error("the base was modified")
	}

	// Refused: a delta before any whole set, a key of the wrong size, too
	// many removals.
	for name, tc := range map[string]struct {
		base *meshrootv1.CRLSet
		m    *meshrootv1.CRLSet
		want string
	}{
		"no base":   {nil, &meshrootv1.CRLSet{Delta: true}, "before the whole set"},
		"short key": {base, &meshrootv1.CRLSet{Delta: true, Removed: [][]byte{[]byte("short")}}, "removed key of 5 bytes"},
		"too many":  {base, &meshrootv1.CRLSet{Delta: true, Removed: make([][]byte, maxCRLRemoved+1)}, "more than"},
	} {
		if _, err := ApplyCRLDelta(tc.base, tc.m); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tc.want)
		}
	}
}

// TestApplyCRLDeltaShares: a list the delta leaves as it was is the
// base's own (no copy); a list it changes is a new one, and the base's
// stays as it was, also when a later delta grows the new list.
func TestApplyCRLDeltaShares(t *testing.T) {
	a, b, c, d := []byte("crl a"), []byte("crl b"), []byte("crl c"), []byte("crl d")
	i1 := []byte("inter 1")
	key := func(d []byte) []byte { h := sha256.Sum256(d); return h[:] }
	base := &meshrootv1.CRLSet{Crls: [][]byte{a, b}, Intermediates: [][]byte{i1}}
	// A root's prepare: a CRL added, no intermediate touched.
	got, err := ApplyCRLDelta(base, &meshrootv1.CRLSet{Delta: true, Crls: [][]byte{c}})
	if err != nil {
		t.Fatal(err)
	}
	if &got.GetIntermediates()[0] != &base.GetIntermediates()[0] {
		t.Error("the intermediates, unchanged, were copied")
	}
	if s := string(join(got.GetCrls())); s != "crl a|crl b|crl c" || &got.GetCrls()[0] == &base.GetCrls()[0] {
		t.Errorf("CRLs after adding c: %s (shared with the base: %v), want a new crl a|crl b|crl c", s, &got.GetCrls()[0] == &base.GetCrls()[0])
	}
	// A removal of something neither list holds changes neither.
	same, err := ApplyCRLDelta(got, &meshrootv1.CRLSet{Delta: true, Removed: [][]byte{key(d)}})
	if err != nil {
		t.Fatal(err)
	}
	if &same.GetCrls()[0] != &got.GetCrls()[0] || &same.GetIntermediates()[0] != &got.GetIntermediates()[0] {
		t.Error("a delta removing nothing held copied the lists")
	}
	// The rollback, then a new prepare from it: the earlier sets keep
	// what they held.
	back, err := ApplyCRLDelta(got, &meshrootv1.CRLSet{Delta: true, Removed: [][]byte{key(c)}})
	if err != nil {
		t.Fatal(err)
	}
	again, err := ApplyCRLDelta(back, &meshrootv1.CRLSet{Delta: true, Crls: [][]byte{d}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		set  *meshrootv1.CRLSet
		want string
	}{{base, "crl a|crl b"}, {got, "crl a|crl b|crl c"}, {back, "crl a|crl b"}, {again, "crl a|crl b|crl d"}} {
		if s := string(join(tc.set.GetCrls())); s != tc.want {
			t.Errorf("CRLs %s, want %s", s, tc.want)
		}
	}
}

func join(ds [][]byte) []byte {
	var out []string
	for _, d := range ds {
		out = append(out, string(d))
	}
	return []byte(strings.Join(out, "|"))
}

// TestCRLStreamCarriesKeys applies a run of deltas through one stream,
// which keeps its entries' keys from set to set, and checks each result
// against ApplyCRLDelta from the set before (which hashes the whole set):
// removals of entries the stream held from the whole set, from a delta
// before its keys were computed, and from one after.
func TestCRLStreamCarriesKeys(t *testing.T) {
	key := func(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }
	ds := func(ss ...string) [][]byte {
		var out [][]byte
		for _, s := range ss {
			out = append(out, []byte(s))
		}
		return out
	}
	steps := []struct {
		m       *meshrootv1.CRLSet
		crls    string
		inters  string
		hasKeys bool
	}{
		{&meshrootv1.CRLSet{Crls: ds("a", "b"), Intermediates: ds("i1")}, "a|b", "i1", false},
		{&meshrootv1.CRLSet{Delta: true, Crls: ds("c")}, "a|b|c", "i1", false},                                                                 // no removal: no hashing
		{&meshrootv1.CRLSet{Delta: true, Crls: ds("d"), Intermediates: ds("i2"), Removed: [][]byte{key("c"), key("i1")}}, "a|b|d", "i2", true}, // keys computed
		{&meshrootv1.CRLSet{Delta: true, Crls: ds("e"), Removed: [][]byte{key("d"), key("a")}}, "b|e", "i2", true},                             // d's key was carried
		{&meshrootv1.CRLSet{Delta: true, Removed: [][]byte{key("e"), key("i2"), key("absent")}}, "b", "", true},
		{&meshrootv1.CRLSet{Crls: ds("x")}, "x", "", false}, // a whole set starts over
	}
	var s crlStream
	var prev *meshrootv1.CRLSet
	for i, st := range steps {
		want, err := ApplyCRLDelta(prev, st.m)
		if err != nil {
			t.Fatalf("step %d: reference: %v", i, err)
		}
		got, err := s.apply(st.m)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if string(join(got.GetCrls())) != st.crls || string(join(got.GetIntermediates())) != st.inters {
			t.Fatalf("step %d: CRLs %q, intermediates %q; want %q, %q", i, join(got.GetCrls()), join(got.GetIntermediates()), st.crls, st.inters)
		}
		if string(join(want.GetCrls())) != st.crls || string(join(want.GetIntermediates())) != st.inters {
			t.Fatalf("step %d: ApplyCRLDelta gives %q, %q", i, join(want.GetCrls()), join(want.GetIntermediates()))
		}
		if (s.crlKeys != nil) != st.hasKeys {
			t.Errorf("step %d: keys held %v, want %v", i, s.crlKeys != nil, st.hasKeys)
		}
		if s.crlKeys != nil {
			for j, d := range got.GetCrls() {
				if s.crlKeys[j] != sha256.Sum256(d) {
					t.Fatalf("step %d: the key of CRL %q is not its SHA-256", i, d)
				}
			}
			for j, d := range got.GetIntermediates() {
				if s.interKeys[j] != sha256.Sum256(d) {
					t.Fatalf("step %d: the key of intermediate %q is not its SHA-256", i, d)
				}
			}
		}
		prev = got
	}

	// A refused delta leaves the stream as it was.
	held := s.set
	if _, err := s.apply(&meshrootv1.CRLSet{Delta: true, Removed: [][]byte{[]byte("short")}}); err == nil {
		t.Fatal("a short key was accepted")
	}
	if s.set != held {
		t.Error("a refused delta replaced the stream's set")
	}
}

// BenchmarkCRLDeltaRenewal applies the delta of one renewal in a fleet of
// 1,000 clusters (a CRL and an intermediate out, their successors in) to
// the set an agent holds: "stream" as the agent's watch does, the keys
// carried from the last set; "rehash" as a stateless ApplyCRLDelta, which
// hashes the whole set each time.
func BenchmarkCRLDeltaRenewal(b *testing.B) {
	const n = 1000
	entry := func(kind string, i, gen int) []byte {
		d := make([]byte, 500)
		copy(d, fmt.Sprintf("%s %d %d", kind, i, gen))
		return d
	}
	whole := &meshrootv1.CRLSet{}
	for i := range n {
		whole.Crls = append(whole.Crls, entry("crl", i, 0))
		whole.Intermediates = append(whole.Intermediates, entry("inter", i, 0))
	}
	renewal := func(held *meshrootv1.CRLSet, k int) *meshrootv1.CRLSet {
		// The oldest entries go, as the fleet renews round-robin.
		oldCRL, oldInter := held.Crls[0], held.Intermediates[0]
		ck, ik := sha256.Sum256(oldCRL), sha256.Sum256(oldInter)
		return &meshrootv1.CRLSet{Delta: true, Crls: [][]byte{entry("crl", k, 1)}, Intermediates: [][]byte{entry("inter", k, 1)},
			Removed: [][]byte{ck[:], ik[:]}}
	}
	b.Run("stream", func(b *testing.B) {
		var s crlStream
		_, _ = s.apply(whole)
		k := 0
		for b.Loop() {
			if _, err := s.apply(renewal(s.set, k)); err != nil {
				b.Fatal(err)
			}
			k++
		}
		if len(s.set.Crls) != n {
			b.Fatalf("%d CRLs held, want %d", len(s.set.Crls), n)
		}
	})
	b.Run("rehash", func(b *testing.B) {
		held := whole
		k := 0
		for b.Loop() {
			var err error
			if held, err = ApplyCRLDelta(held, renewal(held, k)); err != nil {
				b.Fatal(err)
			}
			k++
		}
		if len(held.Crls) != n {
			b.Fatalf("%d CRLs held, want %d", len(held.Crls), n)
		}
	})
}

// TestCRLStreamResolves: a stream with the agent's caches hands every set
// it builds to them resolved, in the set's order (a junk CRL left out);
// what a delta keeps is carried from the last set, not looked up again
// (the caches are emptied between steps: a lookup would parse anew and
// give another entry); a set with an intermediate that does not parse is
// not recorded for the certificates, so intermediates still refuses it.
func TestCRLStreamResolves(t *testing.T) {
	crl := func() []byte {
		issuer, k := testIssuer(t)
		return testCRL(t, issuer, k, 1, time.Hour)
	}
	inter := func() []byte { return testCert(t).Raw }
	c1, c2, c3 := crl(), crl(), crl()
	i1, i2, i3 := inter(), inter(), inter()
	junk := []byte("not a certificate")
	key := func(d []byte) []byte { h := sha256.Sum256(d); return h[:] }
	var crls crlCache
	var certs certCache
	s := crlStream{crls: &crls, certs: &certs}
	steps := []struct {
		m          *meshrootv1.CRLSet
		carried    int  // entries and intermediates carried from the last set read (not counted when intersOK is false)
		intersOK   bool // every intermediate parses
		wantCRLs   [][]byte
		wantInters [][]byte
	}{
		{&meshrootv1.CRLSet{Crls: [][]byte{c1, junk, c2}, Intermediates: [][]byte{i1, i2}}, 0, true, [][]byte{c1, c2}, [][]byte{i1, i2}},
		{&meshrootv1.CRLSet{Delta: true, Crls: [][]byte{c3}, Intermediates: [][]byte{i3}, Removed: [][]byte{key(c1), key(i1)}}, 2, true, [][]byte{c2, c3}, [][]byte{i2, i3}},
		{&meshrootv1.CRLSet{Delta: true, Intermediates: [][]byte{junk}}, 0, false, [][]byte{c2, c3}, nil},
		{&meshrootv1.CRLSet{Delta: true, Removed: [][]byte{key(junk), key(c2)}}, 3, true, [][]byte{c3}, [][]byte{i2, i3}},
	}
	var lastEnts map[string]*crlEntry
	var lastCAs map[string]*crlCA
	for i, st := range steps {
		set, err := s.apply(st.m)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		crls.mu.Lock()
		recorded := crls.set == set
		crls.mu.Unlock()
		if !recorded {
			t.Fatalf("step %d: the set was not handed to the CRL cache", i)
		}
		es := crls.setEntries(set)
		if len(es) != len(st.wantCRLs) {
			t.Fatalf("step %d: %d entries, want %d", i, len(es), len(st.wantCRLs))
		}
		carried := 0
		ents := map[string]*crlEntry{}
		for j, e := range es {
			if !bytes.Equal(e.rl.Raw, st.wantCRLs[j]) {
				t.Fatalf("step %d: entry %d is not the set's CRL %d", i, j, j)
			}
			if lastEnts[string(e.rl.Raw)] == e {
				carried++
			}
			ents[string(e.rl.Raw)] = e
		}
		got, err := certs.intermediates(set)
		switch {
		case !st.intersOK:
			if err == nil {
				t.Errorf("step %d: a set with an intermediate that does not parse was read", i)
			}
		case err != nil:
			t.Fatalf("step %d: %v", i, err)
		default:
			if len(got) != len(st.wantInters) {
				t.Fatalf("step %d: %d intermediates, want %d", i, len(got), len(st.wantInters))
			}
			cas := map[string]*crlCA{}
			for j, c := range got {
				if !bytes.Equal(c.raw, st.wantInters[j]) {
					t.Fatalf("step %d: intermediate %d is not the set's", i, j)
				}
				if lastCAs[string(c.raw)] == c {
					carried++
				}
				cas[string(c.raw)] = c
			}
			lastCAs = cas
		}
		if st.intersOK && carried != st.carried {
			t.Errorf("step %d: %d carried from the last set, want %d", i, carried, st.carried)
		}
		lastEnts = ents
		// Empty the caches: only what the stream carries survives.
		crls.mu.Lock()
		crls.m = derIndex[*crlEntry]{}
		crls.mu.Unlock()
		certs.mu.Lock()
		certs.m = derIndex[*crlCA]{}
		certs.mu.Unlock()
	}
}
