package agent

import (
	"crypto/x509"
	"fmt"
	"sync"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
)

// maxCachedCerts bounds the parsed certificates an agent keeps: the
// fleet's current cluster intermediates (one per cluster, two during a
// rotation) must fit, or every reconcile parses them all again.
const maxCachedCerts = 8192

// certCache keeps the fleet's intermediates by their DER (derIndex),
// parsed once into what the CRL plan reads (crlCA). The CRL set of every
// bundle message lists each current cluster intermediate of the fleet,
// and each message differs from the last by a few: at 1,000 clusters
// parsing the set anew cost each agent tens of milliseconds per change,
// repeated on every cluster of the fleet. A nil cache parses every time.
type certCache struct {
	mu sync.Mutex
	m  derIndex[*crlCA]
	// set and setCAs are the last CRL set whose intermediates were all
	// resolved by the watch stream that built it (resolved), and those
	// intermediates: intermediates answers for that set without looking up
	// its ~1,000 intermediates by their DER.
	set    *meshrootv1.CRLSet
	setCAs []*crlCA
}

// parse returns der as the CRL plan reads it, from the cache when it was
// parsed before. The result is shared: callers must not change it.
func (c *certCache) parse(der []byte) (*crlCA, error) {
	if c == nil {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		return crlCAOf(cert, true), nil
	}
	c.mu.Lock()
	cached, ok := c.m.get(der)
	c.mu.Unlock()
	if ok {
		return cached, nil
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	info := crlCAOf(cert, false)
	c.mu.Lock()
	defer c.mu.Unlock()
	if cached, ok := c.m.get(der); ok { // parsed meanwhile by another caller
		return cached, nil
	}
	c.m.put(der, info, maxCachedCerts)
	return info, nil
}

// intermediates reads the intermediates of a bundle message's CRL set
// through the cache. A certificate that does not parse is refused with
// its position, as wire.CRLSetFromProto refuses it.
func (c *certCache) intermediates(m *meshrootv1.CRLSet) ([]*crlCA, error) {
	if c != nil && m != nil {
		c.mu.Lock()
		set, cas := c.set, c.setCAs
		c.mu.Unlock()
		if set == m {
			return cas, nil
		}
	}
	inters := make([]*crlCA, 0, len(m.GetIntermediates()))
	for i, der := range m.GetIntermediates() {
		info, err := c.parse(der)
		if err != nil {
			return nil, fmt.Errorf("CRL set: certificate %d: %v", i+1, err)
		}
		inters = append(inters, info)
	}
	return inters, nil
}

// resolved records cas as set's intermediates, in order (what intermediates
// would return), resolved by the watch stream that built set from the
// last one (crlStream). A set with an intermediate that does not parse
// (a nil in cas) is not recorded: intermediates refuses it. cas is kept:
// callers must not change it.
func (c *certCache) resolved(set *meshrootv1.CRLSet, cas []*crlCA) {
	if c == nil || set == nil {
		return
	}
	for _, ca := range cas {
		if ca == nil {
			return
		}
	}
	c.mu.Lock()
	c.set, c.setCAs = set, cas
	c.mu.Unlock()
}
