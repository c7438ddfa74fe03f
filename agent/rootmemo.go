package agent

import (
	"bytes"
	"crypto/x509"
	"sync"
)

// rootMemo is the trust bundle's roots as the agent parsed them last.
// Every bundle change makes the agent parse the bundle's roots twice (to
// write root-cert.pem, and as CAs of the ca-crl.pem plan), while the
// roots themselves change only at a rotation's phases: at 1,000 clusters
// those parses were ~4 % of the agents' CPU per change (bench-fleet,
// session 23). A root whose DER is one parsed last is taken from here;
// the parsed certificates are shared, and never changed.
type rootMemo struct {
	mu    sync.Mutex
	certs []*x509.Certificate
}

// parse returns ders parsed, in order, reusing the certificates of the
// last call whose DER is the same.
func (m *rootMemo) parse(ders [][]byte) ([]*x509.Certificate, error) {
	m.mu.Lock()
	last := m.certs
	m.mu.Unlock()
	out := make([]*x509.Certificate, 0, len(ders))
	for _, d := range ders {
		c := certWithDER(last, d)
		if c == nil {
			var err error
			if c, err = x509.ParseCertificate(d); err != nil {
				return nil, err
			}
		}
		out = append(out, c)
	}
	m.mu.Lock()
	m.certs = out
	m.mu.Unlock()
	return out, nil
}

// known is the certificate of the last parse whose DER is der, or nil:
// istiod publishes the roots the agent wrote, so its ConfigMap's are
// nearly always these (istiodRoots).
func (m *rootMemo) known(der []byte) *x509.Certificate {
	m.mu.Lock()
	last := m.certs
	m.mu.Unlock()
	return certWithDER(last, der)
}

// certWithDER is the certificate of certs whose DER is der, or nil.
func certWithDER(certs []*x509.Certificate, der []byte) *x509.Certificate {
	for _, c := range certs {
		if bytes.Equal(c.Raw, der) {
			return c
		}
	}
	return nil
}
