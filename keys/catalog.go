package keys

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"

	"github.com/meshroot/meshroot/internal/vaultconf"
)

// Backend is one kind of key store. Each backend package registers one
// with Register, for the URI schemes it owns, and alone knows the syntax
// of its key manager URIs and key references.
type Backend interface {
	// Schemes lists the URI schemes the backend owns, such as "pkcs11".
	Schemes() []string
	// Open opens the key manager that uri names. uri comes from the
	// configuration (--key, keys.create) or from ManagerURI.
	Open(ctx context.Context, uri string, cfg Config) (KeyManager, error)
	// ManagerURI returns the URI of a key manager that can load ref, a
	// stored key reference, when the configuration names no key manager
	// of ref's scheme. A backend for which only the configuration may say
	// what is loaded (a PKCS#11 module, cloud credentials) returns an
	// error wrapping ErrNotConfigured.
	ManagerURI(ref string, cfg Config) (string, error)
}

// Config is what the catalog hands a backend when it opens a key manager:
// the settings that come from meshroot's configuration, never from a key
// reference. Each backend reads the fields it needs.
type Config struct {
	// Create is the URI of the key manager for new keys: "disk" when
	// empty, or a URI of a registered scheme.
	Create string
	// Dir is the folder of the "disk" key manager (DATA_DIR/keys).
	Dir string
	// Passphrase encrypts and decrypts key files (disk, softkms).
	Passphrase []byte
	// InsecurePlaintext lets file backends write unencrypted keys when no
	// passphrase is given. For development only.
	InsecurePlaintext bool
	// GroupReadable lets file backends read key files that their group
	// may read: a Kubernetes Secret mounted for a non-root pod is owned by
	// root with the pod's fsGroup and mode 0440 at least. Set in HA mode,
	// where key files must be encrypted; a file others may read is always
	// refused.
	GroupReadable bool
	// Vault is how to reach and log in to Vault (vault-transit).
	Vault vaultconf.Config
	// Logger receives backend events such as Vault token renewal.
	Logger *slog.Logger
}

// DefaultCreate is the key manager for new keys when none is configured.
const DefaultCreate = "disk"

// Catalog maps URI schemes to the backends that own them. The package
// keeps one, which backends fill from their init functions; tests may
// build their own.
type Catalog struct {
	mu       sync.RWMutex
	backends map[string]Backend
}

// NewCatalog returns an empty catalog.
func NewCatalog() *Catalog { return &Catalog{backends: map[string]Backend{}} }

var catalog = NewCatalog()

// Register adds b to the package's catalog under each of its schemes. It
// panics when a scheme is taken: two backends cannot own one scheme.
func Register(b Backend) { catalog.Register(b) }

// Lookup returns the backend that owns scheme in the package's catalog.
func Lookup(scheme string) (Backend, bool) { return catalog.Lookup(scheme) }

// Schemes lists the schemes registered in the package's catalog, sorted.
func Schemes() []string { return catalog.Schemes() }

// Open opens the key manager that uri names, with the backend of its
// scheme from the package's catalog.
func Open(ctx context.Context, uri string, cfg Config) (KeyManager, error) {
	return catalog.Open(ctx, uri, cfg)
}

// NewRouter returns a router over the package's catalog; see
// Catalog.NewRouter.
func NewRouter(cfg Config) (*Router, error) { return catalog.NewRouter(cfg) }

// Register adds b under each of its schemes; it panics on a taken scheme.
func (c *Catalog) Register(b Backend) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range b.Schemes() {
		s = strings.ToLower(s)
		if _, ok := c.backends[s]; ok {
			panic("keys: two backends register the URI scheme " + s)
		}
		c.backends[s] = b
	}
}

// Lookup returns the backend that owns scheme.
func (c *Catalog) Lookup(scheme string) (Backend, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	b, ok := c.backends[strings.ToLower(scheme)]
	return b, ok
}

// Schemes lists the registered schemes, sorted.
func (c *Catalog) Schemes() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]string, 0, len(c.backends))
	for s := range c.backends {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// Open opens the key manager that uri names.
func (c *Catalog) Open(ctx context.Context, uri string, cfg Config) (KeyManager, error) {
	b, err := c.backend(uri, "key manager")
	if err != nil {
		return nil, err
	}
	return b.Open(ctx, uri, cfg)
}

// backend finds the backend of uri's scheme, or explains which exist.
// what says what uri is ("key manager", "key reference").
func (c *Catalog) backend(uri, what string) (Backend, error) {
	s := Scheme(uri)
	if b, ok := c.Lookup(s); ok {
		return b, nil
	}
	return nil, fmt.Errorf("%s %q: scheme %q belongs to no key manager in this binary: use one of %s", what, Scheme(uri)+":...", s, strings.Join(c.Schemes(), ", "))
}

// Scheme returns the URI scheme of a key manager URI or key reference, in
// lower case: "pkcs11" for "pkcs11:token=...", "vault-transit" for
// "vault-transit://transit/root", "disk" for "disk" and "disk:root-1".
func Scheme(uri string) string {
	s, _, _ := strings.Cut(uri, ":")
	return strings.ToLower(s)
}
