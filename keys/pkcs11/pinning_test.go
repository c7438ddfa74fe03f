//go:build cgo && !nopkcs11

package pkcs11

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshroot/meshroot/keys"
	_ "github.com/meshroot/meshroot/keys/disk" // the default key manager, "disk"
	"github.com/meshroot/meshroot/keys/pkcs11/softhsmtest"
)

// evilModule builds a shared library whose constructor writes a marker
// file the moment anything dlopens it, and returns its path and the
// marker's.
func evilModule(t *testing.T) (module, marker string) {
	t.Helper()
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler to build the test module (cgo builds need one)")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "evil.c")
	module, marker = filepath.Join(dir, "evil.so"), filepath.Join(dir, "loaded")
	code := `#include <stdio.h>
__attribute__((constructor)) static void loaded(void) {
	FILE *f = fopen("` + marker + `", "w");
	if (f) { fputs("dlopen'ed\n", f); fclose(f); }
}
`
	if err := os.WriteFile(src, []byte(code), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cc, "-shared", "-fPIC", "-o", module, src).CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	return module, marker
}

func notLoaded(t *testing.T, marker string) {
	t.Helper()
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the module named by the stored reference was dlopen'ed")
	}
}

// TestStoredReferenceCannotChooseTheModule: the PKCS#11 module is a shared
// library loaded into meshroot, so only the configuration may name it. A
// stored key reference naming another module (say, a database row edited
// to point at /tmp/evil.so) is refused and never loaded, whether the
// configuration names no PKCS#11 module or SoftHSM2's.
func TestStoredReferenceCannotChooseTheModule(t *testing.T) {
	module, marker := evilModule(t)
	tok := softhsmtest.NewToken(t)
	ctx := context.Background()
	ref := "pkcs11:module-path=" + module + ";token=meshroot;object=root?pin-value=" + tok.PIN

	t.Run("no PKCS#11 module configured", func(t *testing.T) {
		r, err := keys.NewRouter(keys.Config{Dir: t.TempDir(), Passphrase: []byte("correct horse battery")})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		_, err = r.Signer(ctx, ref)
		if !errors.Is(err, keys.ErrNotConfigured) || !strings.Contains(err.Error(), "configuration names no PKCS#11 module") {
			t.Errorf("Signer: %v, want a refusal saying no PKCS#11 module is configured", err)
		}
		if strings.Contains(err.Error(), "pin-value="+tok.PIN) {
			t.Errorf("the error shows the PIN: %v", err)
		}
		notLoaded(t, marker)
	})

	t.Run("SoftHSM2 configured", func(t *testing.T) {
		r, err := keys.NewRouter(keys.Config{Create: tok.URI()})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		k, err := r.CreateKey(ctx, "root", keys.ECP256)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Signer(ctx, k.Ref); err != nil {
			t.Fatalf("the configured module's own key: %v", err)
		}
		_, err = r.Signer(ctx, ref)
		if !errors.Is(err, keys.ErrNotConfigured) || !strings.Contains(err.Error(), "names PKCS#11 module "+module+", but the configured module is "+softhsmtest.Module) {
			t.Errorf("Signer: %v, want a refusal naming both modules", err)
		}
		notLoaded(t, marker)
	})

	t.Run("a configuration without module-path pins the p11-kit proxy", func(t *testing.T) {
		tk, err := parseToken("pkcs11:token=meshroot?pin-value=" + tok.PIN)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := tk.parseRef(ref); !errors.Is(err, keys.ErrNotConfigured) {
			t.Errorf("parseRef: %v, want a refusal", err)
		}
		if _, _, err := tk.parseRef("pkcs11:token=meshroot;object=root"); err != nil {
			t.Errorf("a reference without module-path: %v", err)
		}
	})

	// The control: the module does run code when loaded, so the checks
	// above would have seen it.
	t.Run("control: configuring the module loads it", func(t *testing.T) {
		km, err := New(ctx, Options{URI: "pkcs11:module-path=" + module + ";token=meshroot?pin-value=" + tok.PIN})
		if err == nil {
			km.Close()
			t.Fatal("a module without PKCS#11 functions opened")
		}
		if _, err := os.Stat(marker); err != nil {
			t.Fatalf("configuring the test module did not load it (%v): the test proves nothing", err)
		}
	})
}
