package keys

import (
	"context"
	"crypto"
	"errors"
	"strings"
	"testing"
)

// fakeKM is a key manager that records which URI opened it.
type fakeKM struct{ uri string }

func (f fakeKM) CreateKey(context.Context, string, KeyType) (Key, error) {
	return Key{Ref: f.uri + "/k"}, nil
}
func (f fakeKM) Signer(context.Context, string) (crypto.Signer, error) { return ECP256.Generate() }
func (f fakeKM) ListKeys(context.Context) ([]Key, error)               { return []Key{{Ref: f.uri}}, nil }

// fakeBackend owns schemes; refs of "free" schemes name their own key
// manager, others need the configuration.
type fakeBackend struct {
	schemes []string
	opened  map[string]int
	down    bool
}

func (b *fakeBackend) Schemes() []string { return b.schemes }
func (b *fakeBackend) Open(_ context.Context, uri string, _ Config) (KeyManager, error) {
	b.opened[uri]++
	if b.down {
		return nil, errors.New("backend is unreachable")
	}
	return fakeKM{uri: uri}, nil
}
func (b *fakeBackend) ManagerURI(ref string, _ Config) (string, error) {
	if Scheme(ref) == "hsm" {
		return "", NotConfigured(errors.New("hsm: configure the module"))
	}
	return ref[:strings.LastIndexByte(ref, '/')], nil
}

func TestRouterSendsEachReferenceToItsBackend(t *testing.T) {
	ctx := context.Background()
	cat := NewCatalog()
	files := &fakeBackend{schemes: []string{"disk", "soft"}, opened: map[string]int{}}
	hsm := &fakeBackend{schemes: []string{"hsm"}, opened: map[string]int{}}
	down := &fakeBackend{schemes: []string{"down"}, opened: map[string]int{}, down: true}
	cat.Register(files)
	cat.Register(hsm)
	cat.Register(down)
	if got := cat.Schemes(); strings.Join(got, ",") != "disk,down,hsm,soft" {
		t.Errorf("Schemes() = %v", got)
	}

	r, err := cat.NewRouter(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if len(files.opened) != 0 {
		t.Errorf("NewRouter opened %v: key managers must open on first use", files.opened)
	}
	if k, err := r.CreateKey(ctx, "x", ECP256); err != nil || k.Ref != "disk/k" {
		t.Fatalf("CreateKey went to %q (%v), want the default disk", k.Ref, err)
	}
	for _, ref := range []string{"disk:a/1", "disk:b/2", "soft:dir=/a/one", "soft:dir=/a/two", "soft:dir=/b/one"} {
		if _, err := r.Signer(ctx, ref); err != nil {
			t.Errorf("Signer(%s): %v", ref, err)
		}
	}
	// A reference of the creation scheme uses the configured key manager;
	// others are opened once per key manager URI their backend derives.
	if files.opened["disk"] != 1 || files.opened["soft:dir=/a"] != 1 || files.opened["soft:dir=/b"] != 1 || len(files.opened) != 3 {
		t.Errorf("opened %v, want disk, soft:dir=/a and soft:dir=/b once each", files.opened)
	}
	// The configuration alone may open an HSM.
	if _, err := r.Signer(ctx, "hsm:module=/tmp/evil.so/k"); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("hsm reference without configuration: %v, want ErrNotConfigured", err)
	}
	if len(hsm.opened) != 0 {
		t.Errorf("an unconfigured reference opened %v", hsm.opened)
	}
	// A backend that cannot open fails only its keys, and is retried.
	for i := 0; i < 2; i++ {
		if _, err := r.Signer(ctx, "down:x/k"); err == nil || !strings.Contains(err.Error(), "unreachable") {
			t.Errorf("a backend that cannot open: %v", err)
		}
	}
	if down.opened["down:x"] != 2 {
		t.Errorf("failed backend opened %d times, want a retry each time", down.opened["down:x"])
	}
	if _, err := r.Signer(ctx, "vault-transit://transit/root"); err == nil || !strings.Contains(err.Error(), "belongs to no key manager") || !strings.Contains(err.Error(), "disk, down, hsm, soft") {
		t.Errorf("unknown scheme: %v", err)
	}
	if _, err := r.ImportKey(ctx, "x", nil); err == nil {
		t.Error("ImportKey into a key manager without Importer succeeded")
	}

	// With an HSM configured for new keys, its references go to it.
	r2, err := cat.NewRouter(Config{Create: "hsm:module=/usr/lib/softhsm.so;pin-value=1234"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r2.Signer(ctx, "hsm:module=/tmp/evil.so/k"); err != nil {
		t.Errorf("hsm reference with the HSM configured: %v", err)
	}
	if hsm.opened["hsm:module=/usr/lib/softhsm.so;pin-value=1234"] != 1 || len(hsm.opened) != 1 {
		t.Errorf("hsm opened %v, want only the configured URI", hsm.opened)
	}
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}

	if _, err := cat.NewRouter(Config{Create: "gcpkms:secret=1234"}); err == nil || strings.Contains(err.Error(), "1234") {
		t.Errorf("unknown scheme for new keys: %v (and the URI's attributes must not be shown)", err)
	}
}

func TestCatalogRefusesASchemeTwice(t *testing.T) {
	cat := NewCatalog()
	cat.Register(&fakeBackend{schemes: []string{"disk"}})
	defer func() {
		if recover() == nil {
			t.Error("a second backend for disk was registered")
		}
	}()
	cat.Register(&fakeBackend{schemes: []string{"DISK"}})
}

func TestScheme(t *testing.T) {
	for in, want := range map[string]string{
		"disk": "disk", "disk:root": "disk", "PKCS11:token=a": "pkcs11",
		"vault-transit://transit/k": "vault-transit", "": "",
	} {
		if got := Scheme(in); got != want {
			t.Errorf("Scheme(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestErrorKindsKeepTheMessage(t *testing.T) {
	base := errors.New("disk key manager: no key file /x")
	err := NotFound(base)
	if err.Error() != base.Error() || !errors.Is(err, ErrKeyNotFound) || !errors.Is(err, base) || errors.Is(err, ErrKeyExists) {
		t.Errorf("NotFound: %q", err)
	}
	if !errors.Is(Exists(base), ErrKeyExists) || !errors.Is(NotConfigured(base), ErrNotConfigured) {
		t.Error("Exists/NotConfigured do not mark their kind")
	}
}
