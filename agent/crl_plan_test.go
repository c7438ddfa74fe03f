package agent_test

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/agent"
	"github.com/meshroot/meshroot/ca"
)

// crlsIn parses the CRLs of a planned ca-crl.pem.
func crlsIn(t *testing.T, p []byte) []*x509.RevocationList {
	t.Helper()
	var out []*x509.RevocationList
	for _, der := range pemBlocks(p) {
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatalf("planned CRL: %v", err)
		}
		out = append(out, rl)
	}
	return out
}

// numbersBy returns the numbers of the CRLs in p that issuer signed.
func numbersBy(t *testing.T, p []byte, issuer *x509.Certificate) []int64 {
	t.Helper()
	var out []int64
	for _, rl := range crlsIn(t, p) {
		if rl.CheckSignatureFrom(issuer) == nil {
			out = append(out, rl.Number.Int64())
		}
	}
	return out
}

func pemJoin(ders ...[]byte) []byte {
	var b []byte
	for _, d := range ders {
		b = append(b, pemOf(d)...)
	}
	return b
}

// TestPlanPublishedCRLFile: once ca-crl.pem was written, the plan never
// takes it out, never goes back to a lower CRL number or to a stale CRL
// when a fresher one is known, keeps the Secret's CRL for a CA the server
// no longer sends one for, and names every CA without a current CRL.
func TestPlanPublishedCRLFile(t *testing.T) {
	root, rk := newCA(t, "root", nil, nil)
	newRoot, nk := newCA(t, "root-2", nil, nil)
	east, ek := newCA(t, "east", root, rk)
	west, _ := newCA(t, "west", root, rk)
	now := time.Now()
	cas := []*x509.Certificate{root, east}
	root1, root2, root3 := crl(t, root, rk, 1, 48*time.Hour), crl(t, root, rk, 2, 48*time.Hour), crl(t, root, rk, 3, 48*time.Hour)
	east5 := crl(t, east, ek, 5, 48*time.Hour)
	held := pemJoin(root1, east5)

	type want struct {
		root, east, newRoot []int64
		missing             []string // substrings, one per missing CA
	}
	for _, tc := range []struct {
		name  string
		cas   []*x509.Certificate
		fleet [][]byte
		held  []byte
		want  want
	}{
		{"fresher root CRL from the server", cas, [][]byte{root2, east5}, held, want{root: []int64{2}, east: []int64{5}}},
		{"a lower number never replaces the Secret's", cas, [][]byte{root2, east5}, pemJoin(root3, east5), want{root: []int64{3}, east: []int64{5}}},
		{"the Secret's CRL kept when the server sends none for the CA", cas, [][]byte{root2}, held, want{root: []int64{2}, east: []int64{5}}},
		{"a new CA without a CRL: the others stay, it is named", []*x509.Certificate{root, east, west}, [][]byte{root2, east5}, held,
			want{root: []int64{2}, east: []int64{5}, missing: []string{"CN=west"}}},
		{"a new root prepared with its CRL: all of them", []*x509.Certificate{root, newRoot, east}, [][]byte{root2, crl(t, newRoot, nk, 1, 48*time.Hour), east5}, held,
			want{root: []int64{2}, east: []int64{5}, newRoot: []int64{1}}},
		{"a new root prepared before its CRL: named, nothing dropped", []*x509.Certificate{root, newRoot, east}, [][]byte{root2, east5}, held,
			want{root: []int64{2}, east: []int64{5}, missing: []string{"CN=root-2"}}},
		{"a stale Secret CRL gives way to a current one with a lower number", cas, [][]byte{root2, east5}, pemJoin(crl(t, root, rk, 9, -time.Minute), east5),
			want{root: []int64{2}, east: []int64{5}}},
		{"an expiring Secret CRL gives way too", cas, [][]byte{root2, east5}, pemJoin(crl(t, root, rk, 9, ca.CRLMinRemaining/2), east5),
			want{root: []int64{2}, east: []int64{5}}},
		{"only a stale CRL known: kept, and named", cas, [][]byte{east5}, pemJoin(crl(t, root, rk, 9, -time.Minute), east5),
			want{root: []int64{9}, east: []int64{5}, missing: []string{"CN=root"}}},
		{"the newer of two stale CRLs", cas, [][]byte{crl(t, root, rk, 10, -time.Minute), east5}, pemJoin(crl(t, root, rk, 9, -time.Minute), east5),
			want{root: []int64{10}, east: []int64{5}, missing: []string{"CN=root"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := agent.PlanPublishedCRLFile(tc.cas, tc.fleet, tc.held, now)
			if p.PEM == nil {
				t.Fatalf("nothing planned: ca-crl.pem would be taken out (missing %v)", p.Missing)
			}
			// A reconcile that wrote this file does not plan it again
			// (reconcileCRL takes the plan of the cacerts write): planning
			// from the written file must give the same file.
			if again := agent.PlanPublishedCRLFile(tc.cas, tc.fleet, p.PEM, now); !bytes.Equal(again.PEM, p.PEM) {
				t.Errorf("planning again from the written file changes it: %v -> %v", crlsIn(t, p.PEM), crlsIn(t, again.PEM))
			}
			// Nor does the same set in another order (a polled bundle's
			// whole set against the one a watch built from deltas).
			reversed := slices.Clone(tc.fleet)
			slices.Reverse(reversed)
			if again := agent.PlanPublishedCRLFile(tc.cas, reversed, p.PEM, now); !bytes.Equal(again.PEM, p.PEM) {
				t.Errorf("planning from the written file with the set reversed changes it: %v -> %v", crlsIn(t, p.PEM), crlsIn(t, again.PEM))
			}
			for _, c := range []struct {
				who  string
				ca   *x509.Certificate
				want []int64
			}{{"root", root, tc.want.root}, {"east", east, tc.want.east}, {"root-2", newRoot, tc.want.newRoot}} {
				if got := numbersBy(t, p.PEM, c.ca); !equalInts(got, c.want) {
					t.Errorf("%s's CRLs: numbers %v, want %v", c.who, got, c.want)
				}
			}
			if len(p.Missing) != len(tc.want.missing) {
				t.Fatalf("missing %q, want %q", p.Missing, tc.want.missing)
			}
			for i, m := range tc.want.missing {
				if !strings.Contains(p.Missing[i], m) {
					t.Errorf("missing[%d] = %q, want it to name %s", i, p.Missing[i], m)
				}
			}
		})
	}
}

// TestPlanPublishedCRLFileNeverEmpty: with nothing to choose from, the
// Secret's file stays as it is; with nothing at all there is nothing to
// write (no empty ca-crl.pem).
func TestPlanPublishedCRLFileNeverEmpty(t *testing.T) {
	root, _ := newCA(t, "root", nil, nil)
	garbage := []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
	if p := agent.PlanPublishedCRLFile([]*x509.Certificate{root}, [][]byte{[]byte("junk")}, garbage, time.Now()); string(p.PEM) != string(garbage) || len(p.Missing) != 1 {
		t.Errorf("unusable input: planned %q, missing %v; want the Secret's file kept and the root named", p.PEM, p.Missing)
	}
	if p := agent.PlanPublishedCRLFile([]*x509.Certificate{root}, nil, nil, time.Now()); p.PEM != nil {
		t.Errorf("nothing known: planned %q, want nothing", p.PEM)
	}
}

// TestPlanCRLFileSameSubjects: a cluster's successive intermediates share
// their subject; the current CRL of each is written (chains through the
// old one may still be in use), and a CRL of one never counts for the
// other.
func TestPlanCRLFileSameSubjects(t *testing.T) {
	root, rk := newCA(t, "root", nil, nil)
	oldEast, ok := newCA(t, "east", root, rk)
	newEast, nk := newCA(t, "east", root, rk)
	now := time.Now()
	rootCRL := crl(t, root, rk, 1, 48*time.Hour)
	p := agent.PlanCRLFile([]*x509.Certificate{root, newEast}, [][]byte{rootCRL, crl(t, oldEast, ok, 7, 48*time.Hour), crl(t, newEast, nk, 3, 48*time.Hour)}, now)
	if p.PEM == nil || len(numbersBy(t, p.PEM, oldEast)) != 1 || len(numbersBy(t, p.PEM, newEast)) != 1 {
		t.Fatalf("planned %d CRLs (missing %v); want the root's and both intermediates'", len(crlsIn(t, p.PEM)), p.Missing)
	}
	// The old intermediate's CRL (higher number) does not cover the new one.
	p = agent.PlanCRLFile([]*x509.Certificate{root, newEast}, [][]byte{rootCRL, crl(t, oldEast, ok, 7, 48*time.Hour)}, now)
	if p.PEM != nil || len(p.Missing) != 1 {
		t.Errorf("the new intermediate counted as covered by the old one's CRL: missing %v", p.Missing)
	}
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// forgedCRL is a CRL naming issuer but signed with another key.
func forgedCRL(t *testing.T, issuer *x509.Certificate, n int64) []byte {
	t.Helper()
	_, other := newCA(t, "x", nil, nil)
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(n), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(48 * time.Hour)},
		&x509.Certificate{RawSubject: issuer.RawSubject, Subject: issuer.Subject, KeyUsage: x509.KeyUsageCRLSign, SubjectKeyId: issuer.SubjectKeyId}, other)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestPlanPublishedCRLFileForged: a CRL naming a CA but not signed by it
// never displaces the CA's own, whatever its number.
func TestPlanPublishedCRLFileForged(t *testing.T) {
	root, rk := newCA(t, "root", nil, nil)
	p := agent.PlanPublishedCRLFile([]*x509.Certificate{root}, [][]byte{forgedCRL(t, root, 99)}, pemOf(crl(t, root, rk, 2, 48*time.Hour)), time.Now())
	if got := numbersBy(t, p.PEM, root); !equalInts(got, []int64{2}) || len(crlsIn(t, p.PEM)) != 1 || len(p.Missing) != 0 {
		t.Errorf("root's CRLs %v of %d, missing %v; want only its own number 2", got, len(crlsIn(t, p.PEM)), p.Missing)
	}
}

// pemBlocks returns the DER of each PEM block in data.
func pemBlocks(data []byte) [][]byte {
	var out [][]byte
	for blk, rest := pem.Decode(data); blk != nil; blk, rest = pem.Decode(rest) {
		out = append(out, blk.Bytes)
	}
	return out
}
