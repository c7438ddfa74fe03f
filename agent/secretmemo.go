package agent

import (
	"bytes"
	"sync"

	"github.com/meshroot/meshroot/ca"
)

// parsedSecret remembers the cacerts files an agent parsed last, and what
// they parsed to: every reconcile reads the Secret, nearly always as the
// last write or read left it, and parsing its five certificates and key
// again cost ~10 % of the agents' CPU per bundle change at 300 clusters
// (bench-fleet). The parse is reused only for byte-identical files (the
// memo keeps its own copy of them); a failed parse is not remembered. A
// nil memo parses every time.
//
// The parsed CACerts is shared between the reconciles that get it:
// callers copy it before changing it, as they did before (reconcile.go).
type parsedSecret struct {
	mu     sync.Mutex
	files  [4][]byte // cert, key, chain and root files, in the layout of format
	format ca.Format
	cc     *ca.CACerts
}

// parse is parseSecret(data), from the memo when data's files are the
// ones parsed last.
func (p *parsedSecret) parse(data map[string][]byte) (*ca.CACerts, ca.Format, error) {
	if p == nil {
		return parseSecret(data)
	}
	format, certFile, keyFile, chainFile, rootFile := secretFiles(data)
	files := [4][]byte{data[certFile], data[keyFile], data[chainFile], data[rootFile]}
	p.mu.Lock()
	if p.cc != nil && p.format == format && sameFiles(&p.files, &files) {
		cc := p.cc
		p.mu.Unlock()
		return cc, format, nil
	}
	p.mu.Unlock()
	cc, format, err := parseSecret(data)
	if err != nil {
		return cc, format, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, f := range files {
		p.files[i] = bytes.Clone(f)
	}
	p.format, p.cc = format, cc
	return cc, format, nil
}

// sameFiles reports whether a and b hold the same bytes, file by file.
func sameFiles(a, b *[4][]byte) bool {
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}
