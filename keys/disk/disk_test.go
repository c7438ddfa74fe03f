package disk

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/keystest"
)

const pass = "correct horse battery"

// openCatalog opens uri through the key catalog, as meshroot does.
func openCatalog(t *testing.T, uri string, cfg keys.Config) keys.KeyManager {
	t.Helper()
	km, err := keys.Open(context.Background(), uri, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return km
}

func TestConformanceDisk(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	keystest.Run(t, keystest.Backend{
		Open: func(t *testing.T) keys.KeyManager {
			return openCatalog(t, "disk", keys.Config{Dir: dir, Passphrase: []byte(pass)})
		},
		KeyTypes:   []keys.KeyType{keys.ECP256, keys.ECP384, keys.RSA2048},
		RefPrefix:  "disk:",
		MissingRef: "disk:missing",
	})
}

func TestConformanceSoftKMS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "softkms")
	keystest.Run(t, keystest.Backend{
		Open: func(t *testing.T) keys.KeyManager {
			return openCatalog(t, "softkms:dir="+dir, keys.Config{Passphrase: []byte(pass)})
		},
		KeyTypes:   []keys.KeyType{keys.ECP256, keys.ECP384, keys.RSA2048},
		RefPrefix:  "softkms:path=" + dir + "/",
		MissingRef: "softkms:path=" + filepath.Join(dir, "missing.key.pem"),
	})
}

func newKM(t *testing.T, dir string, o Options) *KeyManager {
	t.Helper()
	o.Dir = dir
	km, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return km
}

func TestKeysAreEncryptedFiles(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "keys")
	km := newKM(t, dir, Options{Passphrase: []byte(pass)})
	if _, err := km.CreateKey(ctx, "root", keys.ECP256); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "root.key.pem")
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, info.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "-----BEGIN ENCRYPTED PRIVATE KEY-----") {
		t.Errorf("%s is not an encrypted PKCS#8 key", path)
	}
	if info, _ := os.Stat(dir); info.Mode().Perm() != 0o700 {
		t.Errorf("key folder mode %v, want 0700", info.Mode().Perm())
	}
}

func TestPassphraseAndFileRefusals(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	km := newKM(t, dir, Options{Passphrase: []byte(pass)})
	if _, err := km.CreateKey(ctx, "root", keys.ECP256); err != nil {
		t.Fatal(err)
	}
	check := func(name string, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, want)
		}
	}
	_, err := km.Signer(ctx, "pkcs11:root")
	check("foreign ref", err, "not a disk key")

	wrong := newKM(t, dir, Options{Passphrase: []byte("wrong passphrase")})
	_, err = wrong.Signer(ctx, "disk:root")
	check("wrong passphrase", err, "wrong passphrase")

	plain := newKM(t, dir, Options{InsecurePlaintext: true})
	_, err = plain.Signer(ctx, "disk:root")
	check("encrypted without passphrase", err, "MESHROOT_PASSPHRASE")

	if err := os.Chmod(filepath.Join(dir, "root.key.pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = km.Signer(ctx, "disk:root")
	check("world-readable key", err, "chmod 600")

	_, err = New(Options{Dir: dir})
	check("no passphrase", err, "--passphrase-file")
	_, err = New(Options{Dir: dir, Passphrase: []byte("short")})
	check("short passphrase", err, "at least")
	// Through the catalog, the default key manager's missing passphrase is
	// a configuration error (the CLI's usage exit code).
	if _, err := keys.Open(ctx, "disk", keys.Config{Dir: dir}); !errors.Is(err, keys.ErrNotConfigured) {
		t.Errorf("disk without a passphrase through the catalog: %v, want keys.ErrNotConfigured", err)
	}
	if _, err := keys.Open(ctx, "softkms:dir="+dir, keys.Config{}); err == nil || !strings.Contains(err.Error(), "softkms key manager: no passphrase") {
		t.Errorf("softkms without a passphrase: %v", err)
	}
}

func TestPlaintextKeysForDevelopment(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	km := newKM(t, dir, Options{InsecurePlaintext: true})
	k, err := km.CreateKey(ctx, "dev", keys.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(dir, "dev.key.pem"))
	if !strings.HasPrefix(string(data), "-----BEGIN PRIVATE KEY-----") {
		t.Error("plaintext mode did not write a plain PKCS#8 key")
	}
	// A manager with a passphrase still reads a plaintext key.
	if _, err := newKM(t, dir, Options{Passphrase: []byte(pass)}).Signer(ctx, k.Ref); err != nil {
		t.Errorf("plaintext key not loadable with a passphrase set: %v", err)
	}
}

func TestSoftKMSReferences(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "softkms")
	km, err := NewSoftKMS("softkms:dir="+dir, Options{Passphrase: []byte(pass)})
	if err != nil {
		t.Fatal(err)
	}
	k, err := km.CreateKey(ctx, "root", keys.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	if want := "softkms:path=" + filepath.Join(dir, "root.key.pem"); k.Ref != want {
		t.Errorf("ref %s, want %s", k.Ref, want)
	}
	// A stored reference alone finds its folder.
	b, _ := keys.Lookup(SoftKMSScheme)
	if uri, err := b.ManagerURI(k.Ref, keys.Config{}); err != nil || uri != "softkms:dir="+dir {
		t.Errorf("ManagerURI(%s) = %q, %v", k.Ref, uri, err)
	}
	if uri, err := b.ManagerURI("disk:root", keys.Config{}); err != nil || uri != "disk" {
		t.Errorf("ManagerURI(disk:root) = %q, %v", uri, err)
	}
	for ref, want := range map[string]string{
		"awskms:key-id=abc":         "not a softkms: reference",
		"softkms:path=relative.pem": "absolute file path",
		"softkms:dir=" + dir:        "absolute file path",
	} {
		if _, err := km.Signer(ctx, ref); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Signer(%s): %v, want %q", ref, err, want)
		}
	}
	// Deleting goes no further than the key manager's own folder.
	outside := filepath.Join(t.TempDir(), "precious.key.pem")
	if err := os.WriteFile(outside, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := km.DeleteKey(ctx, "softkms:path="+outside); err == nil {
		t.Error("DeleteKey removed a file outside the key folder")
	}
	if _, err := os.Stat(outside); err != nil {
		t.Errorf("the file outside the key folder is gone: %v", err)
	}
	for uri, want := range map[string]string{
		"softkms:":                 "names no folder",
		"softkms:dir=/tmp;path=/x": "unknown attribute",
		"disk:dir=/tmp":            "softkms:dir=/path for another folder",
	} {
		if _, err := keys.Open(ctx, uri, keys.Config{Dir: dir, Passphrase: []byte(pass)}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%s): %v, want %q", uri, err, want)
		}
	}
}
