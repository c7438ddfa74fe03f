package agent

import (
	"crypto"
	"sync"
)

// keyPEMMemo is the intermediate's key as the agent's last cacerts write
// encoded it. Every bundle change rewrites the Secret with the same key,
// and encoding it (PKCS#8 of a P-256 key) costs a scalar multiplication:
// ~2.5 % of the agents' CPU per change at 1,000 clusters (bench-fleet,
// session 23). The key is the same crypto.Signer from write to write
// while the key file is unchanged (parsedSecret keeps it).
type keyPEMMemo struct {
	mu  sync.Mutex
	key crypto.Signer
	pem []byte
}

// get is the encoding of key written last, or nil.
func (m *keyPEMMemo) get(key crypto.Signer) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if key == nil || m.key != key {
		return nil
	}
	return m.pem
}

// set remembers pem as key's encoding (a key file the agent wrote).
func (m *keyPEMMemo) set(key crypto.Signer, pem []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if key == nil || pem == nil {
		m.key, m.pem = nil, nil
		return
	}
	m.key, m.pem = key, pem
}
