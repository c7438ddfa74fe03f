package ca

import (
	"crypto/x509"
	"errors"
	"sync"
)

// interCache keeps the parsed certificates of the fleet's active
// intermediates between calls of FleetCRLs, which the bundle hub makes at
// every refresh (every poll and every change): parsing 1,000 stored
// intermediates each time cost the server tens of milliseconds per
// refresh. Each call keeps only the serials it used, so superseded
// intermediates leave the cache with the next call.
type interCache struct {
	mu sync.Mutex
	m  map[string]*x509.Certificate
}

// interPass is one call's view: the certificates found or parsed so far.
type interPass struct {
	old, now map[string]*x509.Certificate
}

func (c *interCache) begin() *interPass {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &interPass{old: c.m, now: make(map[string]*x509.Certificate, len(c.m))}
}

// get returns the certificate stored as certPEM for serial, parsed once.
func (p *interPass) get(serial string, certPEM []byte) (*x509.Certificate, error) {
	if c, ok := p.old[serial]; ok {
		p.now[serial] = c
		return c, nil
	}
	certs, err := ParseCerts(certPEM)
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate")
	}
	p.now[serial] = certs[0]
	return certs[0], nil
}

// end keeps what the call used for the next one.
func (c *interCache) end(p *interPass) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = p.now
}
