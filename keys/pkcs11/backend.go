package pkcs11

import (
	"context"
	"fmt"

	"github.com/meshroot/meshroot/keys"
)

func init() { keys.Register(backend{}) }

// backend registers the pkcs11 scheme with the key catalog.
type backend struct{}

func (backend) Schemes() []string { return []string{Scheme} }

// Open opens the token that a configured pkcs11: URI names.
func (backend) Open(ctx context.Context, uri string, _ keys.Config) (keys.KeyManager, error) {
	return New(ctx, Options{URI: uri})
}

// ManagerURI refuses: the module (a shared library loaded into meshroot),
// the token and the PIN come from the configuration only, never from a
// stored reference.
func (backend) ManagerURI(ref string, _ keys.Config) (string, error) {
	return "", keys.NotConfigured(fmt.Errorf("pkcs11 key manager: key %s is in a PKCS#11 token, but the configuration names no PKCS#11 module: meshroot loads only a configured module; configure it (--key pkcs11:module-path=/path/module.so;token=LABEL?pin-source=FILE, or keys.create in the config)", redact(ref)))
}
