package agent

import (
	"crypto/sha256"
	"strings"
	"testing"

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

func join(ds [][]byte) []byte {
	var out []string
	for _, d := range ds {
		out = append(out, string(d))
	}
	return []byte(strings.Join(out, "|"))
}
