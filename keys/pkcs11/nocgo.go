//go:build !cgo || nopkcs11

package pkcs11

import (
	"context"
	"crypto"

	"github.com/meshroot/meshroot/keys"
)

// KeyManager keeps keys in one PKCS#11 token. In this build (no cgo, or the
// nopkcs11 tag) it cannot exist: New returns ErrNoCgo.
type KeyManager struct{}

var _ keys.KeyManager = (*KeyManager)(nil)

// New returns ErrNoCgo: PKCS#11 needs a cgo build.
func New(context.Context, Options) (*KeyManager, error) { return nil, ErrNoCgo }

// Close does nothing in this build.
func (*KeyManager) Close() error { return nil }

// CreateKey returns ErrNoCgo.
func (*KeyManager) CreateKey(context.Context, string, keys.KeyType) (keys.Key, error) {
	return keys.Key{}, ErrNoCgo
}

// Signer returns ErrNoCgo.
func (*KeyManager) Signer(context.Context, string) (crypto.Signer, error) { return nil, ErrNoCgo }

// DeleteKey returns ErrNoCgo.
func (*KeyManager) DeleteKey(context.Context, string) error { return ErrNoCgo }

// ListKeys returns ErrNoCgo.
func (*KeyManager) ListKeys(context.Context) ([]keys.Key, error) { return nil, ErrNoCgo }
