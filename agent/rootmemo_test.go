package agent

import (
	"bytes"
	"testing"
)

// TestRootMemo: roots whose DER was parsed last are reused (the same
// certificate), others are parsed, a DER that does not parse is an error
// and leaves the memo as it was.
func TestRootMemo(t *testing.T) {
	a, _ := confirmCA(t, "root a", nil, nil)
	b, _ := confirmCA(t, "root b", nil, nil)
	var m rootMemo
	first, err := m.parse([][]byte{bytes.Clone(a.Raw)})
	if err != nil || len(first) != 1 || !bytes.Equal(first[0].Raw, a.Raw) {
		t.Fatalf("parse [a] = %v, %v", first, err)
	}
	both, err := m.parse([][]byte{bytes.Clone(a.Raw), bytes.Clone(b.Raw)})
	if err != nil || len(both) != 2 {
		t.Fatalf("parse [a b] = %v, %v", both, err)
	}
	if both[0] != first[0] {
		t.Error("root a was parsed again; want the certificate parsed last")
	}
	if !bytes.Equal(both[1].Raw, b.Raw) || both[1].Subject.CommonName != "root b" {
		t.Errorf("root b parsed as %v", both[1].Subject)
	}
	bad := bytes.Clone(b.Raw)
	bad[len(bad)/2] ^= 0xff
	bad = bad[:len(bad)-3]
	if got, err := m.parse([][]byte{a.Raw, bad}); err == nil {
		t.Fatalf("a truncated root parsed: %v", got)
	}
	again, err := m.parse([][]byte{b.Raw})
	if err != nil || again[0] != both[1] {
		t.Errorf("after a failed parse, root b = %p (%v), want the one parsed before (%p)", again[0], err, both[1])
	}
}

// TestRootMemoKnown: istiod's published roots are looked up among those
// parsed last by their DER (the same certificate, no parse); another DER,
// or one that differs in a byte, is not known.
func TestRootMemoKnown(t *testing.T) {
	a, _ := confirmCA(t, "root a", nil, nil)
	b, _ := confirmCA(t, "root b", nil, nil)
	var m rootMemo
	if m.known(a.Raw) != nil {
		t.Fatal("an empty memo knows root a")
	}
	parsed, err := m.parse([][]byte{bytes.Clone(a.Raw)})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.known(bytes.Clone(a.Raw)); got != parsed[0] {
		t.Errorf("known(a) = %p, want the certificate parsed (%p)", got, parsed[0])
	}
	if got := m.known(b.Raw); got != nil {
		t.Errorf("known(b) = %v, want nil: b was not parsed", got.Subject)
	}
	flipped := bytes.Clone(a.Raw)
	flipped[len(flipped)-1] ^= 1
	if got := m.known(flipped); got != nil {
		t.Error("a DER differing from a's in its last byte is taken for a")
	}
}
