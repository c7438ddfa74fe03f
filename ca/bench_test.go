package ca

import (
	"crypto/rand"
	"crypto/x509"
	"testing"
	"time"

	"github.com/meshroot/meshroot/keys"
)

// BenchmarkSignIntermediate measures SignIntermediate (CSR signature check,
// policy, serial, SKI, signing, parsing the result) next to the raw
// x509.CreateCertificate of the same template with the same root key (the
// ceiling for any CA), and next to that plus the CSR signature check that any
// CA must do. test/bench/sign.sh prints the ratios.
func BenchmarkSignIntermediate(b *testing.B) {
	for _, kt := range []keys.KeyType{keys.ECP256, keys.RSA4096} {
		root, rootKey := testRoot(b, kt)
		a, err := NewAuthority([]*x509.Certificate{root}, rootKey, Policy{})
		if err != nil {
			b.Fatal(err)
		}
		csr := testCSR(b, p256(b), nil)
		req := IntermediateRequest{Cluster: "east", TrustDomain: "example.org", CSR: csr, TTL: 30 * 24 * time.Hour}
		sample, err := a.SignIntermediate(req)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("root="+string(kt)+"/meshroot", func(b *testing.B) {
			for b.Loop() {
				if _, err := a.SignIntermediate(req); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("root="+string(kt)+"/raw+csrcheck", func(b *testing.B) {
			tmpl := *sample
			for b.Loop() {
				if err := csr.CheckSignature(); err != nil {
					b.Fatal(err)
				}
				if _, err := x509.CreateCertificate(rand.Reader, &tmpl, root, csr.PublicKey, rootKey); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("root="+string(kt)+"/raw", func(b *testing.B) {
			tmpl := *sample
			for b.Loop() {
				if _, err := x509.CreateCertificate(rand.Reader, &tmpl, root, csr.PublicKey, rootKey); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
