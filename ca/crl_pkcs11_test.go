package ca_test

import (
	"context"
	"crypto/x509"
	"path/filepath"
	"testing"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
	_ "github.com/meshroot/meshroot/keys/pkcs11" // registers pkcs11:
	"github.com/meshroot/meshroot/keys/pkcs11/softhsmtest"
	"github.com/meshroot/meshroot/store/sqlite"
)

// TestRootCRLInSoftHSM2: a root whose key is in a PKCS#11 token (SoftHSM2)
// signs its CRL through the key manager like any other.
func TestRootCRLInSoftHSM2(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	ctx := ca.WithActor(context.Background(), actor)
	km, err := keys.Open(ctx, tok.URI(), keys.Config{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "meshroot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc, err := ca.NewService(st, km, ca.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	root, err := svc.InitRoot(ctx, ca.InitRootRequest{TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := svc.RootCRL(ctx, root.ID)
	if err != nil {
		t.Fatal(err)
	}
	certs, _ := ca.ParseCerts(root.ChainPEM)
	rl, err := x509.ParseRevocationList(c.DER)
	if err != nil || rl.CheckSignatureFrom(certs[0]) != nil {
		t.Fatalf("CRL signed in SoftHSM2 does not verify: %v", err)
	}
}
