package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"testing"
	"time"
)

// BenchmarkPlanCRLFileFleet times one agent planning ca-crl.pem for a
// fleet of N clusters (a root and N cluster intermediates, each with its
// CRL), with the agent's CRL cache warm as it is after the first
// reconcile: the work each agent does on every bundle change.
func BenchmarkPlanCRLFileFleet(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("clusters=%d", n), func(b *testing.B) {
			now := time.Now()
			mk := func(cn string, parent *x509.Certificate, pk *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
				k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: cn, Organization: []string{"example.org"}},
					NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
					KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
				if parent == nil {
					parent, pk = tmpl, k
				}
				der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, k.Public(), pk)
				if err != nil {
					b.Fatal(err)
				}
				c, _ := x509.ParseCertificate(der)
				return c, k
			}
			crl := func(c *x509.Certificate, k *ecdsa.PrivateKey) []byte {
				der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(48 * time.Hour)}, c, k)
				if err != nil {
					b.Fatal(err)
				}
				return der
			}
			root, rk := mk("root", nil, nil)
			cas := []*x509.Certificate{root}
			crls := [][]byte{crl(root, rk)}
			for i := range n {
				c, k := mk(fmt.Sprintf("cluster-%d", i), root, rk)
				cas = append(cas, c)
				crls = append(crls, crl(c, k))
			}
			var cache crlCache
			if p := planCRLFile(&cache, cas, crls, now); len(p.Missing) != 0 {
				b.Fatalf("missing %v", p.Missing)
			}
			b.ResetTimer()
			for b.Loop() {
				planCRLFile(&cache, cas, crls, now)
			}
		})
	}
}
