package agent

import (
	"bytes"
	"testing"
)

func TestJoinFileGrowsTheLastFileInPlace(t *testing.T) {
	var c crlCache
	a, b, x, y := []byte("AAAA"), []byte("BB"), []byte("XX"), []byte("YYY")
	same := func(p, q []byte) bool { return len(p) > 0 && len(q) > 0 && &p[0] == &q[0] }

	f := c.joinFile([][]byte{a, b})
	if string(f) != "AAAABB" || cap(f) != len(f) {
		t.Fatalf("first file %q, cap %d: want AAAABB, capped at its length", f, cap(f))
	}
	// The plan keeps the whole file and adds a CRL: no copy.
	g := c.joinFile([][]byte{f, x})
	if string(g) != "AAAABBXX" || !same(f, g) || cap(g) != len(g) {
		t.Fatalf("file %q (in f's array: %v, cap %d): want AAAABBXX in f's array, capped", g, same(f, g), cap(g))
	}
	if string(f) != "AAAABB" {
		t.Fatalf("the earlier file changed to %q", f)
	}
	// A second file from f (its plan made again) must not write over g.
	h := c.joinFile([][]byte{f, y})
	if string(h) != "AAAABBYYY" || same(f, h) {
		t.Fatalf("second file from f %q (in f's array: %v): want a copy", h, same(f, h))
	}
	if string(g) != "AAAABBXX" {
		t.Fatalf("a second file from f changed the first to %q", g)
	}
	// h is now the last file; g is not, so a file from g is a copy.
	i := c.joinFile([][]byte{g, y})
	if string(i) != "AAAABBXXYYY" || same(g, i) {
		t.Fatalf("file from an earlier file %q (in its array: %v): want a copy", i, same(g, i))
	}
	// A part of the last file, or the same bytes in another array: a copy.
	j := c.joinFile([][]byte{i[:4], x})
	if string(j) != "AAAAXX" || same(i, j) || string(i) != "AAAABBXXYYY" {
		t.Fatalf("file from a prefix %q (in its array: %v), the last now %q", j, same(i, j), i)
	}
	k := c.joinFile([][]byte{bytes.Clone(j), x})
	if string(k) != "AAAAXXXX" || same(j, k) {
		t.Fatalf("file from a copy %q (in the last file's array: %v)", k, same(j, k))
	}
	// No room left: a copy, with room again.
	big := bytes.Repeat([]byte("Z"), fileGrowthMin+len(k))
	l := c.joinFile([][]byte{k, big})
	if !bytes.Equal(l, append([]byte("AAAAXXXX"), big...)) || same(k, l) {
		t.Fatalf("file past the room (in the last file's array: %v)", same(k, l))
	}
	m := c.joinFile([][]byte{l, x})
	if !same(l, m) || !bytes.Equal(m[len(l):], x) {
		t.Fatalf("a file after a copy is not written in its room")
	}
	if c.grewInPlace != 2 {
		t.Fatalf("%d files written in the last one's room, want 2 (g and m)", c.grewInPlace)
	}
}
