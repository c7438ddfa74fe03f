// Package keys defines where meshroot keeps the private keys of its
// signing authorities. Implementations live in sub-packages: disk (encrypted
// PEM files) is the first; HSM, cloud KMS and Vault Transit follow the same
// interface, so that a root key need never exist in meshroot's memory.
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
