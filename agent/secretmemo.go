package agent

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"sync"

	"github.com/meshroot/meshroot/ca"
)

// parsedSecret remembers the cacerts files an agent parsed last, and what
// they parsed to: every reconcile reads the Secret, nearly always as the
// last write or read left it, and parsing its five certificates and key
// again cost ~10 % of the agents' CPU per bundle change at 300 clusters
// (bench-fleet). The parse is reused only for byte-identical files (the
// memo keeps its own copy of them); a failed parse is not remembered. A
// nil memo parses every time. When the files changed, as root-cert.pem
// does at every bundle change, the certificates of the last parse (by
// DER) and its key (when the key file is the same) are reused, and only
// what is new is parsed: parsing them all again was ~9 % of the agents'
// CPU per change at 1,000 clusters (bench-fleet, session 22).
//
// The parsed CACerts is shared between the reconciles that get it:
// callers copy it before changing it, as they did before (reconcile.go).
type parsedSecret struct {
	mu     sync.Mutex
	files  [4][]byte // cert, key, chain and root files, in the layout of format
	format ca.Format
	cc     *ca.CACerts
	// certs are the certificates of the last parse, by DER. A bundle
	// change rewrites root-cert.pem (and the chain's root with it) but
	// keeps most of its certificates: those are taken from here instead
	// of parsed again.
	certs map[string]*x509.Certificate
}

// parse is parseSecret(data), from the memo when data's files are the
// ones parsed last; certificates parsed last are not parsed again.
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
	known := p.certs
	var knownKey crypto.Signer
	if p.cc != nil && bytes.Equal(p.files[1], files[1]) {
		knownKey = p.cc.Key // the same key file: a P-256 key's parse derives its public key
	}
	p.mu.Unlock()
	seen := make(map[string]*x509.Certificate, len(known)+1)
	cc, format, err := parseSecretWith(data, func(der []byte) (*x509.Certificate, error) {
		if c, ok := seen[string(der)]; ok {
			return c, nil
		}
		c, ok := known[string(der)]
		if !ok {
			var err error
			if c, err = x509.ParseCertificate(der); err != nil {
				return nil, err
			}
		}
		seen[string(der)] = c
		return c, nil
	}, func(pemData []byte) (crypto.Signer, error) {
		if knownKey != nil {
			return knownKey, nil
		}
		return parseKey(pemData)
	})
	if err != nil {
		return cc, format, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, f := range files {
		p.files[i] = bytes.Clone(f)
	}
	p.format, p.cc, p.certs = format, cc, seen
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
