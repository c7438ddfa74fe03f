//go:build !cgo || nopkcs11

package kms

import (
	"context"
	"errors"
	"testing"

	"github.com/meshroot/meshroot/keys/pkcs11"
)

func TestPKCS11NeedsCgo(t *testing.T) {
	_, err := New(context.Background(), Options{URI: "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=meshroot?pin-value=1234"})
	if !errors.Is(err, pkcs11.ErrNoCgo) {
		t.Fatalf("pkcs11: URI in a no-cgo build: %v, want pkcs11.ErrNoCgo", err)
	}
}
