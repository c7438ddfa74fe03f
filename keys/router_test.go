package keys

import (
	"context"
	"crypto"
	"errors"
	"strings"
	"testing"
)

type fakeKM struct {
	name   string
	opened *int
}

func (f fakeKM) CreateKey(context.Context, string, KeyType) (Key, error) {
	return Key{Ref: f.name + ":k"}, nil
}
func (f fakeKM) Signer(_ context.Context, ref string) (crypto.Signer, error) {
	if !strings.HasPrefix(ref, f.name) {
		return nil, errors.New("routed to the wrong backend")
	}
	return ECP256.Generate()
}
func (f fakeKM) ListKeys(context.Context) ([]Key, error) { return nil, nil }

func TestRouter(t *testing.T) {
	ctx := context.Background()
	opens := map[string]int{}
	factory := func(name string) Factory {
		return func(context.Context, string) (KeyManager, error) {
			opens[name]++
			if name == "down" {
				return nil, errors.New("backend down is unreachable")
			}
			return fakeKM{name: name}, nil
		}
	}
	r := NewRouter(fakeKM{name: "disk"}, map[string]Factory{
		"disk:": factory("disk"), "pkcs11:": factory("pkcs11"), "down:": factory("down"),
	})
	if k, err := r.CreateKey(ctx, "x", ECP256); err != nil || k.Ref != "disk:k" {
		t.Fatalf("CreateKey went to %q, %v", k.Ref, err)
	}
	for _, ref := range []string{"pkcs11:token=a;object=b", "pkcs11:token=a;object=c", "disk:root"} {
		if _, err := r.Signer(ctx, ref); err != nil {
			t.Errorf("Signer(%s): %v", ref, err)
		}
	}
	if opens["pkcs11"] != 1 {
		t.Errorf("pkcs11 backend opened %d times, want once", opens["pkcs11"])
	}
	if _, err := r.Signer(ctx, "down:key"); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("a backend that cannot open: %v", err)
	}
	if _, err := r.Signer(ctx, "vault-transit://transit/root"); err == nil || !strings.Contains(err.Error(), "no configured key manager") {
		t.Errorf("unknown prefix: %v", err)
	}
	// A backend that failed to open is tried again next time.
	_, _ = r.Signer(ctx, "down:key")
	if opens["down"] != 2 {
		t.Errorf("failed backend opened %d times, want a retry each time", opens["down"])
	}
}
