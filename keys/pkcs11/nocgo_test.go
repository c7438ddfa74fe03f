//go:build !cgo || nopkcs11

package pkcs11

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestNoCgoBuildSaysWhy(t *testing.T) {
	_, err := New(context.Background(), Options{URI: "pkcs11:module-path=" + SoftHSM2Module + ";token=meshroot?pin-value=1234"})
	if !errors.Is(err, ErrNoCgo) {
		t.Fatalf("New in a no-cgo build: %v, want ErrNoCgo", err)
	}
	if !strings.Contains(err.Error(), "pkcs11 needs a cgo build") {
		t.Errorf("error %q does not say that pkcs11 needs a cgo build", err)
	}
}
