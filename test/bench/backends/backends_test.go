// Package backends benchmarks cluster intermediate signing through each
// place a root key can live, in one run: the same ca.Authority profile and
// policy, the signer swapped (memory, disk, SoftHSM2, Vault Transit), plus
// the Vault PKI upstream. test/bench/backends.sh prints the ratios.
package backends

import (
	"context"
	"crypto"
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/vaultclient"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/disk"
	"github.com/meshroot/meshroot/keys/pkcs11"
	"github.com/meshroot/meshroot/keys/pkcs11/softhsmtest"
	"github.com/meshroot/meshroot/keys/vaulttransit"
	"github.com/meshroot/meshroot/test/vaultenv"
	"github.com/meshroot/meshroot/upstream/vaultpki"
)

func csr(b *testing.B) *x509.CertificateRequest {
	b.Helper()
	k, _ := keys.ECP256.Generate()
	der, err := x509.CreateCertificateRequest(nil, &x509.CertificateRequest{}, k)
	if err != nil {
		b.Fatal(err)
	}
	c, _ := x509.ParseCertificateRequest(der)
	return c
}

// benchAuthority signs intermediates under a root whose key is signer.
func benchAuthority(b *testing.B, signer crypto.Signer) {
	b.Helper()
	root, err := ca.NewRoot(signer, ca.RootOptions{TrustDomain: "example.org"})
	if err != nil {
		b.Fatal(err)
	}
	a, err := ca.NewAuthority([]*x509.Certificate{root}, signer, ca.Policy{})
	if err != nil {
		b.Fatal(err)
	}
	req := ca.IntermediateRequest{Cluster: "east", TrustDomain: "example.org", CSR: csr(b)}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.SignIntermediate(req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkIntermediate signs P-256 cluster intermediates through each
// backend. The backends are set up once, before the sub-benchmarks (which
// the testing package runs several times).
func BenchmarkIntermediate(b *testing.B) {
	ctx := context.Background()
	mem, _ := keys.ECP256.Generate()

	dkm, err := disk.New(disk.Options{Dir: filepath.Join(b.TempDir(), "keys"), Passphrase: []byte("benchmark passphrase")})
	if err != nil {
		b.Fatal(err)
	}
	diskSigner := newSigner(b, dkm)

	tok := softhsmtest.NewToken(b)
	hsm, err := pkcs11.New(ctx, pkcs11.Options{URI: tok.URI()})
	if err != nil {
		b.Fatal(err)
	}
	defer hsm.Close()
	hsmSigner := newSigner(b, hsm)

	v := vaultenv.Start(b)
	v.EnableTransit(b, "transit")
	vc := vaultclient.Config{Address: v.Addr, Auth: vaultclient.Auth{Method: "token", Token: v.RootToken}}
	transit, err := vaulttransit.New(ctx, vaulttransit.Options{Vault: vc})
	if err != nil {
		b.Fatal(err)
	}
	defer transit.Close()
	transitSigner := newSigner(b, transit)

	v.EnablePKI(b, "pki")
	v.GenerateRoot(b, "pki", "root", "bench root")
	up, err := vaultpki.New(ctx, vaultpki.Options{Vault: vc, Mount: "pki"})
	if err != nil {
		b.Fatal(err)
	}
	defer up.Close()

	b.Run("memory", func(b *testing.B) { benchAuthority(b, mem) })
	b.Run("disk", func(b *testing.B) { benchAuthority(b, diskSigner) })
	b.Run("softhsm2", func(b *testing.B) { benchAuthority(b, hsmSigner) })
	b.Run("vault-transit", func(b *testing.B) { benchAuthority(b, transitSigner) })
	b.Run("vault-pki", func(b *testing.B) {
		c := csr(b)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := up.SignIntermediate(ctx, c, "east", 24*time.Hour); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// newSigner creates a P-256 root key in km and loads it.
func newSigner(b *testing.B, km keys.KeyManager) crypto.Signer {
	b.Helper()
	ctx := context.Background()
	k, err := km.CreateKey(ctx, "root", keys.ECP256)
	if err != nil {
		b.Fatal(err)
	}
	s, err := km.Signer(ctx, k.Ref)
	if err != nil {
		b.Fatal(err)
	}
	return s
}
