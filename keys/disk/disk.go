// Package disk is the key manager that keeps private keys as PKCS#8 PEM
// files in a folder, encrypted with a passphrase (or, for development only,
// in plain text). Files are written atomically with mode 0600 in a 0700
// folder, and a key file readable by group or others is refused on load.
//
// It owns two URI schemes, one key manager with two reference syntaxes:
//
//	disk                        the data dir's keys/ folder (keys.Config.Dir)
//	    references: disk:NAME
//	softkms:dir=/path/to/folder a folder of its own, in the file layout of
//	                            go.step.sm's softkms
//	    references: softkms:path=/path/to/folder/NAME.key.pem
//
// Each key NAME is NAME.key.pem (the private key) beside NAME.pub.pem (its
// public half, which ListKeys reads without the passphrase).
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
	// GroupReadable accepts key files their group may read (a mounted
	// Kubernetes Secret, see keys.Config.GroupReadable).
	GroupReadable bool
}

// KeyManager keeps keys in files under one folder.
type KeyManager struct {
	dir       string
	pass      []byte
	plaintext bool
	groupRead bool
	refs      syntax
}

var (
	_ keys.KeyManager = (*KeyManager)(nil)
	_ keys.Importer   = (*KeyManager)(nil)
	_ keys.Deleter    = (*KeyManager)(nil)
)

// New returns the key manager of "disk:NAME" references over opts.Dir. It
// refuses to run without a passphrase unless opts.InsecurePlaintext is set.
func New(opts Options) (*KeyManager, error) { return newManager(opts, diskSyntax) }

func newManager(opts Options, refs syntax) (*KeyManager, error) {
	if opts.Dir == "" {
		return nil, fmt.Errorf("%s: no key folder given", refs.label)
	}
	if len(opts.Passphrase) == 0 && !opts.InsecurePlaintext {
		return nil, fmt.Errorf("%s: no passphrase: pass --passphrase-file or set MESHROOT_PASSPHRASE (or --insecure-plaintext-key for development)", refs.label)
	}
	if len(opts.Passphrase) > 0 && len(opts.Passphrase) < MinPassphraseLen {
		return nil, fmt.Errorf("%s: passphrase is %d characters: use at least %d", refs.label, len(opts.Passphrase), MinPassphraseLen)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("%s: create key folder: %w", refs.label, err)
	}
	return &KeyManager{dir: opts.Dir, pass: opts.Passphrase, plaintext: len(opts.Passphrase) == 0, groupRead: opts.GroupReadable, refs: refs}, nil
}

// Dir is the folder that holds the key files.
func (m *KeyManager) Dir() string { return m.dir }

// CreateKey generates a key of type kt and stores it as name.
func (m *KeyManager) CreateKey(_ context.Context, name string, kt keys.KeyType) (keys.Key, error) {
	if err := m.checkName(name); err != nil {
		return keys.Key{}, err
	}
	signer, err := kt.Generate()
	if err != nil {
		return keys.Key{}, fmt.Errorf("%s: %w", m.refs.label, err)
	}
	return m.store(name, signer, kt)
}

// ImportKey stores an existing private key as name.
func (m *KeyManager) ImportKey(_ context.Context, name string, signer crypto.Signer) (keys.Key, error) {
	if err := m.checkName(name); err != nil {
		return keys.Key{}, err
	}
	kt, err := keys.KeyTypeOf(signer.Public())
	if err != nil {
		return keys.Key{}, fmt.Errorf("%s: import key %s: %w", m.refs.label, name, err)
	}
	return m.store(name, signer, kt)
}

func (m *KeyManager) checkName(name string) error {
	if err := keys.CheckKeyName(name); err != nil {
		return fmt.Errorf("%s: %w", m.refs.label, err)
	}
	return nil
}

// store writes signer's key (encrypted unless in plaintext mode) and its
// public half, refusing to overwrite an existing key.
func (m *KeyManager) store(name string, signer crypto.Signer, kt keys.KeyType) (keys.Key, error) {
	path := m.keyPath(name)
	taken := func() error {
		return keys.Exists(fmt.Errorf("%s: key %s already exists (%s): choose another name", m.refs.label, name, path))
	}
	// A cheap look first spares the key derivation; the exclusive write
	// below still decides.
	if _, err := os.Lstat(path); err == nil {
		return keys.Key{}, taken()
	}
	opts := []pemutil.Options{pemutil.WithPKCS8(true)}
	if !m.plaintext {
		opts = append(opts, pemutil.WithPassword(m.pass))
	}
	block, err := pemutil.Serialize(signer, opts...)
	if err != nil {
		return keys.Key{}, fmt.Errorf("%s: encode key %s: %w", m.refs.label, name, err)
	}
	pubBlock, err := pemutil.Serialize(signer.Public())
	if err != nil {
		return keys.Key{}, fmt.Errorf("%s: encode public key %s: %w", m.refs.label, name, err)
	}
	// The private key goes first and exclusively: it decides whether the
	// name is taken. The public half is a cache that ListKeys reads.
	if err := fsutil.WriteFileExclusive(path, pem.EncodeToMemory(block), 0o600); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return keys.Key{}, taken()
		}
		return keys.Key{}, fmt.Errorf("%s: store key %s: %w", m.refs.label, name, err)
	}
	if err := fsutil.WriteFile(m.pubPath(name), pem.EncodeToMemory(pubBlock), 0o644); err != nil {
		return keys.Key{}, fmt.Errorf("%s: store public key %s: %w", m.refs.label, name, err)
	}
	k := keys.Key{Ref: m.refs.ref(m.dir, name), Type: kt, Public: signer.Public()}
	if info, err := os.Stat(path); err == nil {
		k.CreatedAt = info.ModTime().UTC()
	}
	return k, nil
}

// Signer loads and decrypts the key that ref names.
func (m *KeyManager) Signer(ctx context.Context, ref string) (crypto.Signer, error) {
	path, err := m.refs.path(m.dir, ref)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: load key %s: %w", m.refs.label, ref, err)
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: key %s: %s", m.refs.label, ref, fmt.Sprintf(format, args...))
	}
	data, err := readPrivate(path, m.groupRead)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, keys.NotFound(fail("no key file %s: it was deleted, or the reference is wrong", path))
	}
	if err != nil {
		return nil, fail("%v", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fail("%s holds no PEM block", path)
	}
	var opts []pemutil.Options
	encrypted := block.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED")
	if encrypted {
		if m.plaintext {
			return nil, fail("%s is encrypted: pass --passphrase-file or set MESHROOT_PASSPHRASE", path)
		}
		opts = append(opts, pemutil.WithPassword(m.pass))
	}
	key, err := pemutil.ParseKey(data, opts...)
	if err != nil {
		if encrypted {
			return nil, fail("cannot decrypt %s: wrong passphrase, or the file is damaged", path)
		}
		return nil, fail("cannot parse %s: %v", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fail("%s holds a %T, not a signing key", path, key)
	}
	if _, err := keys.KeyTypeOf(signer.Public()); err != nil {
		return nil, fail("%v", err)
	}
	return signer, nil
}

// DeleteKey removes the key files of ref. It succeeds when they are gone.
// Only a key of this folder is deleted, whatever file the reference names.
func (m *KeyManager) DeleteKey(_ context.Context, ref string) error {
	path, err := m.refs.path(m.dir, ref)
	if err != nil {
		return err
	}
	name, ok := strings.CutSuffix(filepath.Base(path), ".key.pem")
	if !ok || !keys.ValidKeyName(name) || filepath.Dir(path) != filepath.Clean(m.dir) {
		return fmt.Errorf("%s: delete key %s: it is not a key of %s: delete only keys of this key manager's folder", m.refs.label, ref, m.dir)
	}
	for _, p := range []string{m.keyPath(name), m.pubPath(name)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: delete key %s: %w", m.refs.label, ref, err)
		}
	}
	return nil
}

// ListKeys lists the keys in the folder, ordered by reference.
func (m *KeyManager) ListKeys(ctx context.Context) ([]keys.Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: list keys: %w", m.refs.label, err)
	}
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		return nil, fmt.Errorf("%s: list keys in %s: %w", m.refs.label, m.dir, err)
	}
	var list []keys.Key
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".key.pem")
		if !ok || e.IsDir() || !keys.ValidKeyName(name) {
			continue
		}
		k := keys.Key{Ref: m.refs.ref(m.dir, name)}
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

// readPrivate reads a private key file, refusing one that others can read
// (or its group, unless groupRead) and one larger than maxKeyFileSize. A
// missing file gives an error wrapping fs.ErrNotExist.
func readPrivate(path string, groupRead bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	mask := fs.FileMode(0o077)
	if groupRead {
		mask = 0o037 // group read only: a Secret mounted with the pod's fsGroup
	}
	if perm := info.Mode().Perm(); perm&mask != 0 {
		return nil, fmt.Errorf("%s has mode %04o: a private key must not be readable by others (chmod 600 %s)", path, perm, path)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
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
