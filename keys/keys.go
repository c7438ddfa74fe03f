// Package keys defines where meshroot keeps the private keys of its
// signing authorities: the KeyManager interface, the optional capabilities
// some key managers add (Importer, Deleter), the catalog of backends and
// the Router that sends each key reference to its backend.
//
// Each backend lives in its own sub-package and registers the URI schemes
// it owns with Register (from an init function): disk ("disk", "softkms"),
// pkcs11 ("pkcs11"), kms ("awskms", "cloudkms", "azurekms") and
// vaulttransit ("vault-transit"). The backend alone parses and formats its
// URIs and references; callers only ask the catalog (Open, NewRouter).
// A program gets the backends it imports: the in-cluster agent imports
// none, and meshroot registers the kms schemes through
// internal/pluginhost, whose key managers run in meshroot-plugin (which
// imports kms). keystest is the conformance suite every backend passes.
package keys

import (
	"context"
	"crypto"
	"fmt"
	"regexp"
	"time"
)

// KeyManager creates keys, hands out signers for them, and lists them.
type KeyManager interface {
	// CreateKey creates a new key of the given type under name and returns
	// its reference. It refuses when a key with that name exists.
	CreateKey(ctx context.Context, name string, kt KeyType) (Key, error)
	// Signer loads the key that ref names, as a crypto.Signer.
	Signer(ctx context.Context, ref string) (crypto.Signer, error)
	// ListKeys lists the keys this manager holds, ordered by name.
	ListKeys(ctx context.Context) ([]Key, error)
}

// Key describes one key held by a KeyManager. It never carries private
// material.
type Key struct {
	// Ref is the reference that Signer takes, for example "disk:root-1".
	Ref       string
	Type      KeyType
	Public    crypto.PublicKey
	CreatedAt time.Time
}

// Importer is implemented by key managers that can take in an existing
// private key, for `meshroot root import`. Keys in an HSM or KMS are
// usually created there instead.
type Importer interface {
	// ImportKey stores signer's private key under name and returns its
	// reference. It refuses when a key with that name exists.
	ImportKey(ctx context.Context, name string, signer crypto.Signer) (Key, error)
}

// Deleter is implemented by key managers that can destroy a key.
type Deleter interface {
	// DeleteKey destroys the key that ref names. It succeeds when the key
	// is already gone. Certificates signed by the key stay valid, but
	// nothing can sign for them any more.
	DeleteKey(ctx context.Context, ref string) error
}

var keyNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidKeyName reports whether name is usable as a key name in every
// backend: 1-63 of a-z 0-9 . _ -, starting with a letter or digit (safe as
// a file name, an HSM label and a Vault path segment).
func ValidKeyName(name string) bool { return keyNamePattern.MatchString(name) }

// CheckKeyName is ValidKeyName as an error that states the rule.
func CheckKeyName(name string) error {
	if !ValidKeyName(name) {
		return fmt.Errorf("key name %q is invalid: use 1-63 of a-z 0-9 . _ - starting with a letter or digit", name)
	}
	return nil
}
