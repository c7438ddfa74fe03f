package disk

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshroot/meshroot/keys"
)

const pass = "correct horse battery"

func newKM(t *testing.T, dir string, o Options) *KeyManager {
	t.Helper()
	o.Dir = dir
	km, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return km
}

func TestCreateSignListEncrypted(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "keys")
	km := newKM(t, dir, Options{Passphrase: []byte(pass)})
	for _, kt := range []keys.KeyType{keys.ECP256, keys.ECP384, keys.RSA2048} {
		k, err := km.CreateKey(ctx, "k-"+string(kt), kt)
		if err != nil {
			t.Fatal(err)
		}
		if k.Ref != "disk:k-"+string(kt) || k.Type != kt {
			t.Errorf("CreateKey returned %+v", k)
		}
		s, err := km.Signer(ctx, k.Ref)
		if err != nil {
			t.Fatal(err)
		}
		digest := sha256.Sum256([]byte("x"))
		if _, err := s.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
			t.Errorf("%s: sign: %v", kt, err)
		}
		path := filepath.Join(dir, "k-"+string(kt)+".key.pem")
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
	}
	if info, _ := os.Stat(dir); info.Mode().Perm() != 0o700 {
		t.Errorf("key folder mode %v, want 0700", info.Mode().Perm())
	}
	keys, err := km.ListKeys(ctx)
	if err != nil || len(keys) != 3 || keys[0].Ref != "disk:k-ec-p256" || keys[0].Public == nil {
		t.Fatalf("ListKeys = %+v, %v", keys, err)
	}
}

func TestRefusals(t *testing.T) {
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
	_, err := km.CreateKey(ctx, "root", keys.ECP256)
	check("duplicate name", err, "already exists")
	_, err = km.CreateKey(ctx, "../escape", keys.ECP256)
	check("path in name", err, "invalid")
	_, err = km.Signer(ctx, "pkcs11:root")
	check("foreign ref", err, "not a disk key")
	_, err = km.Signer(ctx, "disk:missing")
	check("missing key", err, "no key file")

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
}

func TestPlaintextAndImport(t *testing.T) {
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
	s, _ := keys.ECP384.Generate()
	imp, err := km.ImportKey(ctx, "imported", s)
	if err != nil || imp.Type != keys.ECP384 {
		t.Fatalf("ImportKey = %+v, %v", imp, err)
	}
	got, err := km.Signer(ctx, imp.Ref)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(s.Public()) {
		t.Error("imported key differs from the one given")
	}
}
