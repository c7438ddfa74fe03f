package keys

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"sync"
)

// Router is a KeyManager over every backend of a catalog: new keys go to
// the key manager that Config.Create names, and each reference goes to the
// backend that owns its scheme. A reference of Create's scheme is loaded
// by that configured key manager; any other by the key manager its backend
// derives from the reference (Backend.ManagerURI), which a backend may
// refuse when only the configuration may decide (PKCS#11). Key managers
// are opened on first use, so one that is down or not configured only
// fails the keys that live in it; one that fails to open is tried again
// the next time.
type Router struct {
	cat    *Catalog
	cfg    Config
	create string
	mu     sync.Mutex
	open   map[string]KeyManager // by key manager URI
}

var (
	_ KeyManager = (*Router)(nil)
	_ Importer   = (*Router)(nil)
	_ Deleter    = (*Router)(nil)
)

// NewRouter checks that cfg.Create names a registered backend and returns
// a router over the catalog. Nothing is opened yet.
func (c *Catalog) NewRouter(cfg Config) (*Router, error) {
	create := cfg.Create
	if create == "" {
		create = DefaultCreate
	}
	if _, err := c.backend(create, "key manager for new keys"); err != nil {
		return nil, err
	}
	return &Router{cat: c, cfg: cfg, create: create, open: map[string]KeyManager{}}, nil
}

// creator opens the key manager for new keys. Errors name its scheme, not
// its URI, which may carry secrets (a PKCS#11 pin-value).
func (r *Router) creator(ctx context.Context) (KeyManager, error) {
	km, err := r.manager(ctx, r.create)
	if err != nil {
		return nil, fmt.Errorf("key manager for new keys (%s): %w", Scheme(r.create), err)
	}
	return km, nil
}

// manager opens, or returns the already open, key manager for uri.
func (r *Router) manager(ctx context.Context, uri string) (KeyManager, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if km, ok := r.open[uri]; ok {
		return km, nil
	}
	km, err := r.cat.Open(ctx, uri, r.cfg)
	if err != nil {
		return nil, err
	}
	r.open[uri] = km
	return km, nil
}

// forRef returns the key manager that loads ref.
func (r *Router) forRef(ctx context.Context, ref string) (KeyManager, error) {
	b, err := r.cat.backend(ref, "key reference")
	if err != nil {
		return nil, err
	}
	if Scheme(ref) == Scheme(r.create) {
		return r.creator(ctx)
	}
	uri, err := b.ManagerURI(ref, r.cfg)
	if err != nil {
		return nil, err
	}
	return r.manager(ctx, uri)
}

// CreateKey creates a key in the key manager for new keys.
func (r *Router) CreateKey(ctx context.Context, name string, kt KeyType) (Key, error) {
	km, err := r.creator(ctx)
	if err != nil {
		return Key{}, err
	}
	return km.CreateKey(ctx, name, kt)
}

// ListKeys lists the keys of the key manager for new keys.
func (r *Router) ListKeys(ctx context.Context) ([]Key, error) {
	km, err := r.creator(ctx)
	if err != nil {
		return nil, err
	}
	return km.ListKeys(ctx)
}

// ImportKey imports into the key manager for new keys when it can.
func (r *Router) ImportKey(ctx context.Context, name string, signer crypto.Signer) (Key, error) {
	km, err := r.creator(ctx)
	if err != nil {
		return Key{}, err
	}
	imp, ok := km.(Importer)
	if !ok {
		return Key{}, fmt.Errorf("the key manager for new keys (%s) cannot import keys: create the key in it and reference it instead", Scheme(r.create))
	}
	return imp.ImportKey(ctx, name, signer)
}

// Signer loads ref from the backend its scheme names.
func (r *Router) Signer(ctx context.Context, ref string) (crypto.Signer, error) {
	km, err := r.forRef(ctx, ref)
	if err != nil {
		return nil, err
	}
	return km.Signer(ctx, ref)
}

// DeleteKey destroys the key ref names, in a backend that can.
func (r *Router) DeleteKey(ctx context.Context, ref string) error {
	km, err := r.forRef(ctx, ref)
	if err != nil {
		return err
	}
	d, ok := km.(Deleter)
	if !ok {
		return fmt.Errorf("the %s key manager cannot delete keys: delete %s in the backend itself", Scheme(ref), ref)
	}
	return d.DeleteKey(ctx, ref)
}

// Close closes every key manager opened that can be closed.
func (r *Router) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for uri, km := range r.open {
		if c, ok := km.(interface{ Close() error }); ok {
			errs = append(errs, c.Close())
		}
		delete(r.open, uri)
	}
	return errors.Join(errs...)
}
