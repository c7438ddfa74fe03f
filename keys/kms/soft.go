package kms

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
	"time"

	"go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/kms/softkms"
	"go.step.sm/crypto/kms/uri"
	"go.step.sm/crypto/pemutil"

	"github.com/meshroot/meshroot/internal/fsutil"
	"github.com/meshroot/meshroot/keys"
)

// minPassphraseLen matches the disk key manager's rule.
const minPassphraseLen = 8

// maxKeyFileSize bounds a key file read (an RSA-4096 PEM is ~3.3 KiB).
const maxKeyFileSize = 64 << 10

// softBackend keeps keys as PEM files through step's softkms, which makes
// keys and loads signers but does not store: the files are written here.
type softBackend struct {
	dir  string
	pass []byte
	kms  *softkms.SoftKMS
}

func newSoft(u *uri.URI, opts Options) (*softBackend, error) {
	for k := range uri.Values(u) {
		if k != "dir" {
			return nil, fmt.Errorf("softkms key manager: URI %q has unknown attribute %q: want softkms:dir=/path/to/folder", u, k)
		}
	}
	dir := u.Get("dir")
	if dir == "" {
		return nil, fmt.Errorf("softkms key manager: URI %q names no folder: want softkms:dir=/path/to/folder", u)
	}
	if len(opts.Passphrase) == 0 && !opts.InsecurePlaintext {
		return nil, errors.New("softkms key manager: no passphrase: give one to encrypt the key files (or allow plaintext keys for development)")
	}
	if len(opts.Passphrase) > 0 && len(opts.Passphrase) < minPassphraseLen {
		return nil, fmt.Errorf("softkms key manager: passphrase is %d characters: use at least %d", len(opts.Passphrase), minPassphraseLen)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("softkms key manager: create key folder: %w", err)
	}
	k, err := softkms.New(context.Background(), apiv1.Options{Type: apiv1.SoftKMS})
	if err != nil {
		return nil, fmt.Errorf("softkms key manager: %w", err)
	}
	return &softBackend{dir: dir, pass: opts.Passphrase, kms: k}, nil
}

func (s *softBackend) keyPath(name string) string { return filepath.Join(s.dir, name+".key.pem") }
func (s *softBackend) pubPath(name string) string { return filepath.Join(s.dir, name+".pub.pem") }

func softRef(path string) string { return "softkms:path=" + path }

func (s *softBackend) createKey(ctx context.Context, name string, kt keys.KeyType) (keys.Key, error) {
	if err := checkName(SoftKMS, name); err != nil {
		return keys.Key{}, err
	}
	alg, bits, err := signatureAlgorithm(SoftKMS, kt)
	if err != nil {
		return keys.Key{}, err
	}
	if err := ctx.Err(); err != nil {
		return keys.Key{}, fmt.Errorf("softkms key manager: create key %s: %w", name, err)
	}
	path := s.keyPath(name)
	resp, err := s.kms.CreateKey(&apiv1.CreateKeyRequest{Name: path, SignatureAlgorithm: alg, Bits: bits})
	if err != nil {
		return keys.Key{}, fmt.Errorf("softkms key manager: create %s key %s: %w", kt, name, err)
	}
	signer, ok := resp.PrivateKey.(crypto.Signer)
	if !ok {
		return keys.Key{}, fmt.Errorf("softkms key manager: create key %s: softkms returned a %T, not a signing key", name, resp.PrivateKey)
	}
	opts := []pemutil.Options{pemutil.WithPKCS8(true)}
	if len(s.pass) > 0 {
		opts = append(opts, pemutil.WithPassword(s.pass))
	}
	block, err := pemutil.Serialize(signer, opts...)
	if err != nil {
		return keys.Key{}, fmt.Errorf("softkms key manager: encode key %s: %w", name, err)
	}
	pubBlock, err := pemutil.Serialize(resp.PublicKey)
	if err != nil {
		return keys.Key{}, fmt.Errorf("softkms key manager: encode public key %s: %w", name, err)
	}
	if err := fsutil.WriteFileExclusive(path, pem.EncodeToMemory(block), 0o600); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return keys.Key{}, fmt.Errorf("softkms key manager: key %s already exists (%s): choose another name", name, path)
		}
		return keys.Key{}, fmt.Errorf("softkms key manager: store key %s: %w", name, err)
	}
	if err := fsutil.WriteFile(s.pubPath(name), pem.EncodeToMemory(pubBlock), 0o644); err != nil {
		return keys.Key{}, fmt.Errorf("softkms key manager: store public key %s: %w", name, err)
	}
	return keys.Key{Ref: softRef(path), Type: kt, Public: resp.PublicKey, CreatedAt: time.Now().UTC().Truncate(time.Second)}, nil
}

func (s *softBackend) signer(ctx context.Context, ref string) (crypto.Signer, error) {
	u, err := uri.ParseWithScheme(SoftKMS, ref)
	if err != nil {
		return nil, fmt.Errorf("softkms key manager: key reference %q cannot be parsed: want softkms:path=/path/to/key.pem", ref)
	}
	path := u.Get("path")
	if path == "" {
		return nil, fmt.Errorf("softkms key manager: key reference %q names no file: want softkms:path=/path/to/key.pem", ref)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("softkms key manager: load key %s: %w", path, err)
	}
	encrypted, err := checkKeyFile(path)
	if err != nil {
		return nil, err
	}
	req := &apiv1.CreateSignerRequest{SigningKey: path}
	if encrypted {
		if len(s.pass) == 0 {
			return nil, fmt.Errorf("softkms key manager: key %s is encrypted: give the passphrase", path)
		}
		req.Password = s.pass
	}
	signer, err := s.kms.CreateSigner(req)
	if err != nil {
		if encrypted {
			return nil, fmt.Errorf("softkms key manager: cannot decrypt key %s: wrong passphrase, or the file is damaged", path)
		}
		return nil, fmt.Errorf("softkms key manager: load key %s: %v", path, err)
	}
	if _, err := keys.KeyTypeOf(signer.Public()); err != nil {
		return nil, fmt.Errorf("softkms key manager: key %s: %w", path, err)
	}
	return signer, nil
}

// checkKeyFile refuses a missing, oversized or over-readable key file and
// reports whether it is encrypted, before softkms reads it (which would
// prompt on a terminal for a missing password).
func checkKeyFile(path string) (encrypted bool, err error) {
	info, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("softkms key manager: no key file %s: it was deleted, or the reference is wrong", path)
		}
		return false, fmt.Errorf("softkms key manager: %w", err)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return false, fmt.Errorf("softkms key manager: %s has mode %04o: a private key must not be readable by others (chmod 600 %s)", path, perm, path)
	}
	if info.Size() > maxKeyFileSize {
		return false, fmt.Errorf("softkms key manager: %s is %d bytes: too large for a key file", path, info.Size())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("softkms key manager: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return false, fmt.Errorf("softkms key manager: %s holds no PEM block", path)
	}
	return block.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED"), nil
}

func (s *softBackend) listKeys(ctx context.Context) ([]keys.Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("softkms key manager: list keys: %w", err)
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("softkms key manager: list keys in %s: %w", s.dir, err)
	}
	var list []keys.Key
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".key.pem")
		if !ok || e.IsDir() || !keys.ValidKeyName(name) {
			continue
		}
		k := keys.Key{Ref: softRef(s.keyPath(name))}
		if info, err := e.Info(); err == nil {
			k.CreatedAt = info.ModTime().UTC()
		}
		if pub, err := pemutil.Read(s.pubPath(name)); err == nil {
			k.Public = pub
			k.Type, _ = keys.KeyTypeOf(pub)
		}
		list = append(list, k)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Ref < list[j].Ref })
	return list, nil
}

func (s *softBackend) close() error { return nil }
