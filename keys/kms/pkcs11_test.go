//go:build cgo && !nopkcs11

package kms

import (
	"context"
	"strings"
	"testing"

	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/pkcs11/softhsmtest"
)

func TestPKCS11IsDelegated(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	ctx := context.Background()
	km, err := New(ctx, Options{URI: tok.URI()})
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	if km.Type() != PKCS11 {
		t.Fatalf("Type %s", km.Type())
	}
	k, err := km.CreateKey(ctx, "root", keys.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k.Ref, "pkcs11:module-path=") {
		t.Errorf("ref %s", k.Ref)
	}
	s, err := km.Signer(ctx, k.Ref)
	if err != nil {
		t.Fatal(err)
	}
	rootAndIntermediate(t, s)
	keys, err := km.ListKeys(ctx)
	if err != nil || len(keys) != 1 {
		t.Errorf("ListKeys: %v %v", keys, err)
	}
	if _, err := New(ctx, Options{URI: tok.URIWithPIN("0000")}); err == nil || !strings.Contains(err.Error(), "pkcs11 key manager") || !strings.Contains(err.Error(), "wrong PIN") {
		t.Errorf("wrong PIN through kms: %v", err)
	}
}
