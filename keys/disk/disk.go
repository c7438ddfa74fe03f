// Package disk is the key manager that keeps private keys as PKCS#8 PEM files
// in a folder, encrypted with a passphrase (or, for development only, in
// plain text). Files are written atomically with mode 0600 in a 0700 folder,
// and a key file readable by group or others is refused on load.
package disk

import (
	"context"
	"crypto"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.step.sm/crypto/pemutil"

	"github.com/meshroot/meshroot/internal/fsutil"
	"github.com/meshroot/meshroot/keys"
)

// RefPrefix starts every reference this key manager hands out.
const RefPrefix = "disk:"

// MinPassphraseLen is the shortest passphrase accepted for encrypting keys.
const MinPassphraseLen = 8

// maxKeyFileSize bounds what is read from a key file (an RSA-4096 PEM is ~3.3 KiB).
const maxKeyFileSize = 64 << 10

// Options configure a disk KeyManager.
type Options struct {
	// Dir is the folder that holds the key files; created 0700 if missing.
	Dir string
	// Passphrase encrypts new keys and decrypts existing ones.
	Passphrase []byte
	// InsecurePlaintext allows creating keys without a passphrase. For
	// development only: anyone who can read the file has the key.
	InsecurePlaintext bool
}

// KeyManager keeps keys in files under one folder.
type KeyManager struct {
	dir       string
	pass      []byte
	plaintext bool
}

var (
	_ keys.KeyManager = (*KeyManager)(nil)
	_ keys.Importer   = (*KeyManager)(nil)
)

// New returns a disk key manager. It refuses to run without a passphrase
// unless opts.InsecurePlaintext is set.
func New(opts Options) (*KeyManager, error) {
	if opts.Dir == "" {
		return nil, errors.New("disk key manager: no key folder given")
	}
	if len(opts.Passphrase) == 0 && !opts.InsecurePlaintext {
		return nil, errors.New("disk key manager: no passphrase: pass --passphrase-file or set MESHROOT_PASSPHRASE (or --insecure-plaintext-key for development)")
	}
	if len(opts.Passphrase) > 0 && len(opts.Passphrase) < MinPassphraseLen {
		return nil, fmt.Errorf("disk key manager: passphrase is %d characters: use at least %d", len(opts.Passphrase), MinPassphraseLen)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("disk key manager: create key folder: %w", err)
	}
	return &KeyManager{dir: opts.Dir, pass: opts.Passphrase, plaintext: len(opts.Passphrase) == 0}, nil
}

// CreateKey generates a key of type kt and stores it as name.
func (m *KeyManager) CreateKey(_ context.Context, name string, kt keys.KeyType) (keys.Key, error) {
	if err := checkName(name); err != nil {
		return keys.Key{}, err
	}
	signer, err := kt.Generate()
	if err != nil {
		return keys.Key{}, err
	}
	return m.store(name, signer, kt)
}

// ImportKey stores an existing private key as name.
func (m *KeyManager) ImportKey(_ context.Context, name string, signer crypto.Signer) (keys.Key, error) {
	if err := checkName(name); err != nil {
		return keys.Key{}, err
	}
	kt, err := keys.KeyTypeOf(signer.Public())
	if err != nil {
		return keys.Key{}, fmt.Errorf("import key %s: %w", name, err)
	}
	return m.store(name, signer, kt)
}

func checkName(name string) error { return keys.CheckKeyName(name) }

// store writes signer's key (encrypted unless in plaintext mode) and its
// public half, refusing to overwrite an existing key.
func (m *KeyManager) store(name string, signer crypto.Signer, kt keys.KeyType) (keys.Key, error) {
	opts := []pemutil.Options{pemutil.WithPKCS8(true)}
	if !m.plaintext {
		opts = append(opts, pemutil.WithPassword(m.pass))
	}
	block, err := pemutil.Serialize(signer, opts...)
	if err != nil {
		return keys.Key{}, fmt.Errorf("encode key %s: %w", name, err)
	}
	pubBlock, err := pemutil.Serialize(signer.Public())
	if err != nil {
		return keys.Key{}, fmt.Errorf("encode public key %s: %w", name, err)
	}
	// The private key goes first and exclusively: it decides whether the
	// name is taken. The public half is a cache that ListKeys reads.
	if err := fsutil.WriteFileExclusive(m.keyPath(name), pem.EncodeToMemory(block), 0o600); err != nil {
		return keys.Key{}, fmt.Errorf("key %s: %w", name, err)
	}
	if err := fsutil.WriteFile(m.pubPath(name), pem.EncodeToMemory(pubBlock), 0o644); err != nil {
		return keys.Key{}, fmt.Errorf("key %s: %w", name, err)
	}
	k := keys.Key{Ref: RefPrefix + name, Type: kt, Public: signer.Public()}
	if info, err := os.Stat(m.keyPath(name)); err == nil {
		k.CreatedAt = info.ModTime().UTC()
	}
	return k, nil
}

// Signer loads and decrypts the key that ref ("disk:NAME") names.
func (m *KeyManager) Signer(_ context.Context, ref string) (crypto.Signer, error) {
	name, ok := strings.CutPrefix(ref, RefPrefix)
	if !ok || !keys.ValidKeyName(name) {
		return nil, fmt.Errorf("key reference %q is not a disk key: want disk:NAME", ref)
	}
	path := m.keyPath(name)
	data, err := readPrivate(path)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", ref, err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("key %s: %s holds no PEM block", ref, path)
	}
	var opts []pemutil.Options
	if block.Type == "ENCRYPTED PRIVATE KEY" {
		if m.plaintext {
			return nil, fmt.Errorf("key %s is encrypted: pass --passphrase-file or set MESHROOT_PASSPHRASE", ref)
		}
		opts = append(opts, pemutil.WithPassword(m.pass))
	}
	key, err := pemutil.ParseKey(data, opts...)
	if err != nil {
		if block.Type == "ENCRYPTED PRIVATE KEY" {
			return nil, fmt.Errorf("key %s: cannot decrypt %s: wrong passphrase, or the file is damaged", ref, path)
		}
		return nil, fmt.Errorf("key %s: cannot parse %s: %v", ref, path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key %s: %s holds a %T, not a signing key", ref, path, key)
	}
	if _, err := keys.KeyTypeOf(signer.Public()); err != nil {
		return nil, fmt.Errorf("key %s: %w", ref, err)
	}
	return signer, nil
}

// ListKeys lists the keys in the folder, ordered by name.
func (m *KeyManager) ListKeys(_ context.Context) ([]keys.Key, error) {
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		return nil, fmt.Errorf("list keys in %s: %w", m.dir, err)
	}
	var list []keys.Key
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".key.pem")
		if !ok || e.IsDir() || !keys.ValidKeyName(name) {
			continue
		}
		k := keys.Key{Ref: RefPrefix + name}
		if info, err := e.Info(); err == nil {
			k.CreatedAt = info.ModTime().UTC()
		}
		if pub, err := pemutil.Read(m.pubPath(name)); err == nil {
			k.Public = pub
			k.Type, _ = keys.KeyTypeOf(pub)
		}
		list = append(list, k)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Ref < list[j].Ref })
	return list, nil
}

func (m *KeyManager) keyPath(name string) string { return filepath.Join(m.dir, name+".key.pem") }
func (m *KeyManager) pubPath(name string) string { return filepath.Join(m.dir, name+".pub.pem") }

// readPrivate reads a private key file, refusing one that group or others
// can read and one larger than maxKeyFileSize.
func readPrivate(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no key file %s", path)
		}
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o: a private key must not be readable by others (chmod 600 %s)", path, perm, path)
	}
	if info.Size() > maxKeyFileSize {
		return nil, fmt.Errorf("%s is %d bytes: too large for a key file", path, info.Size())
	}
	buf := make([]byte, info.Size())
	if _, err := f.ReadAt(buf, 0); err != nil && info.Size() > 0 {
		return nil, err
	}
	return buf, nil
}
