package server

import "testing"

// TestServerCertReissuedOnlyForANewActiveRoot: the server certificate is
// reissued when the first active root appears and when it changes, not for
// the other bundle changes (CRLs, prepared and retired roots, federation),
// which arrive once per cluster that joins or renews.
func TestServerCertReissuedOnlyForANewActiveRoot(t *testing.T) {
	steps := []struct {
		name   string
		b      Bundles
		ok     bool
		want   bool
		active string
	}{
		{"no bundle yet", Bundles{}, false, false, ""},
		{"first active root", Bundles{ActiveRootID: "a", Version: [32]byte{1}}, true, true, "a"},
		{"a CRL arrived", Bundles{ActiveRootID: "a", Version: [32]byte{2}}, true, false, "a"},
		{"a root prepared", Bundles{ActiveRootID: "a", Version: [32]byte{3}}, true, false, "a"},
		{"store unavailable", Bundles{}, false, false, "a"},
		{"activated", Bundles{ActiveRootID: "b", Version: [32]byte{4}}, true, true, "b"},
		{"old root retired", Bundles{ActiveRootID: "b", Version: [32]byte{5}}, true, false, "b"},
	}
	active := ""
	for _, s := range steps {
		var again bool
		active, again = reissueFor(active, s.b, s.ok)
		if again != s.want || active != s.active {
			t.Errorf("%s: reissue %v, active %q; want %v, %q", s.name, again, active, s.want, s.active)
		}
	}
}
