package keys

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// Factory opens the key manager for references with a given prefix, on
// first use. ref is the first reference that needed it (a PKCS#11
// reference names its module and token, for example).
type Factory func(ctx context.Context, ref string) (KeyManager, error)

// Router is a KeyManager over several backends: new keys go to one of them
// (the one chosen for creation), and each reference is sent to the backend
// its prefix names ("disk:", "pkcs11:", "vault-transit://", "softkms:",
// "awskms:", ...). Backends are opened on first use, so a backend that is
// down or not configured only fails the keys that live in it.
type Router struct {
	create    KeyManager
	mu        sync.Mutex
	factories map[string]Factory
	open      map[string]KeyManager
}

var _ KeyManager = (*Router)(nil)

// NewRouter returns a router that creates keys in create and resolves
// references through factories, keyed by reference prefix.
func NewRouter(create KeyManager, factories map[string]Factory) *Router {
	return &Router{create: create, factories: factories, open: map[string]KeyManager{}}
}

// CreateKey creates a key in the backend chosen for creation.
func (r *Router) CreateKey(ctx context.Context, name string, kt KeyType) (Key, error) {
	if r.create == nil {
		return Key{}, errors.New("no key manager is configured for new keys")
	}
	return r.create.CreateKey(ctx, name, kt)
}

// ListKeys lists the keys of the backend chosen for creation.
func (r *Router) ListKeys(ctx context.Context) ([]Key, error) {
	if r.create == nil {
		return nil, errors.New("no key manager is configured for new keys")
	}
	return r.create.ListKeys(ctx)
}

// ImportKey imports into the creation backend when it can.
func (r *Router) ImportKey(ctx context.Context, name string, signer crypto.Signer) (Key, error) {
	imp, ok := r.create.(Importer)
	if !ok {
		return Key{}, errors.New("the key manager for new keys cannot import keys: create the key in the backend and reference it instead")
	}
	return imp.ImportKey(ctx, name, signer)
}

// Signer loads ref from the backend its prefix names.
func (r *Router) Signer(ctx context.Context, ref string) (crypto.Signer, error) {
	km, err := r.backend(ctx, ref)
	if err != nil {
		return nil, err
	}
	return km.Signer(ctx, ref)
}

func (r *Router) backend(ctx context.Context, ref string) (KeyManager, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var prefix string
	for p := range r.factories {
		if strings.HasPrefix(ref, p) && len(p) > len(prefix) {
			prefix = p
		}
	}
	if prefix == "" {
		known := make([]string, 0, len(r.factories))
		for p := range r.factories {
			known = append(known, p)
		}
		return nil, fmt.Errorf("key reference %q names no configured key manager (known: %s)", ref, strings.Join(known, " "))
	}
	if km, ok := r.open[prefix]; ok {
		return km, nil
	}
	km, err := r.factories[prefix](ctx, ref)
	if err != nil {
		return nil, err
	}
	r.open[prefix] = km
	return km, nil
}

// Close closes every backend that can be closed.
func (r *Router) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	seen := map[KeyManager]bool{}
	for _, km := range append(mapValues(r.open), r.create) {
		if km == nil || seen[km] {
			continue
		}
		seen[km] = true
		if c, ok := km.(interface{ Close() error }); ok {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

func mapValues(m map[string]KeyManager) []KeyManager {
	out := make([]KeyManager, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
