package agent

import (
	"testing"
	"unsafe"
)

// within reports whether p's bytes lie in file's array.
func within(p, file []byte) bool {
	if len(p) == 0 || cap(file) == 0 {
		return false
	}
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(file[:1])))
	at := uintptr(unsafe.Pointer(unsafe.SliceData(p)))
	return at >= lo && at < lo+uintptr(cap(file))
}

func TestPlannedPEMPointsIntoFile(t *testing.T) {
	var c crlCache
	e1 := &crlEntry{pem: []byte("AA")}
	e2 := &crlEntry{pem: []byte("BBB")}
	e3 := &crlEntry{pem: []byte("C")}
	plan := func(es ...*crlEntry) ([]planBlock, []byte) {
		blocks := make([]planBlock, len(es))
		parts := make([][]byte, len(es))
		for i, e := range es {
			blocks[i] = planBlock{e: e, pem: e.pem, der: []byte{byte(i)}}
			parts[i] = e.pem
		}
		file := c.joinFile(parts)
		c.planned(blocks, file)
		return blocks, file
	}

	blocks, file1 := plan(e1, e2, e3)
	for i, e := range []*crlEntry{e1, e2, e3} {
		if !within(e.pem, file1) || !within(blocks[i].pem, file1) || e.inFile != c.fileNo {
			t.Fatalf("block %d (%q) is not the file's bytes after the plan (entry in file: %v, block: %v, file number %d of %d)",
				i, e.pem, within(e.pem, file1), within(blocks[i].pem, file1), e.inFile, c.fileNo)
		}
	}
	if string(e1.pem) != "AA" || string(e2.pem) != "BBB" || string(e3.pem) != "C" || cap(e2.pem) != len(e2.pem) {
		t.Fatalf("blocks %q %q %q (cap %d): want AA BBB C, each capped at its length", e1.pem, e2.pem, e3.pem, cap(e2.pem))
	}
	_ = append(e2.pem, 'x') // capped: a copy, not a write into the file
	if string(file1) != "AABBBC" {
		t.Fatalf("the file changed to %q", file1)
	}

	// e2 leaves the plan but stays in the cache: its own copy again, so
	// that it does not keep file1 alive.
	_, file2 := plan(e1, e3)
	if within(e2.pem, file1) || string(e2.pem) != "BBB" || e2.inFile != 0 {
		t.Fatalf("a block that left the plan: %q, in the old file: %v, file number %d; want its own copy of BBB", e2.pem, within(e2.pem, file1), e2.inFile)
	}
	if !within(e1.pem, file2) || !within(e3.pem, file2) || string(e1.pem) != "AA" || string(e3.pem) != "C" {
		t.Fatalf("the kept blocks %q %q are not the new file's bytes", e1.pem, e3.pem)
	}

	// A file that is not the blocks joined changes nothing.
	no := c.fileNo
	blocks = []planBlock{{e: e1, pem: e1.pem, der: []byte{1}}, {e: e2, pem: e2.pem, der: []byte{2}}}
	odd := []byte("AABBB\n")
	c.planned(blocks, odd)
	if c.fileNo != no || within(e1.pem, odd) || within(e2.pem, odd) || !within(e1.pem, file2) {
		t.Fatalf("a file longer than its blocks was pointed into (file number %d, was %d)", c.fileNo, no)
	}
}
