package ca_test

import (
	"crypto/x509"
	"fmt"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
)

// A root signs a cluster intermediate from the cluster's CSR, and the result
// is assembled and self-checked as Istio cacerts.
func ExampleAuthority_SignIntermediate() {
	rootKey, _ := keys.ECP256.Generate()
	root, _ := ca.NewRoot(rootKey, ca.RootOptions{TrustDomain: "example.org"})
	authority, _ := ca.NewAuthority([]*x509.Certificate{root}, rootKey, ca.Policy{})

	// In a cluster, the intermediate key is generated there and only the CSR leaves.
	clusterKey, _ := keys.ECP256.Generate()
	der, _ := x509.CreateCertificateRequest(nil, &x509.CertificateRequest{}, clusterKey)
	csr, _ := ca.ParseCSR(der)

	inter, err := authority.SignIntermediate(ca.IntermediateRequest{Cluster: "east", TrustDomain: "example.org", CSR: csr, TTL: 30 * 24 * time.Hour})
	if err != nil {
		fmt.Println(err)
		return
	}
	cacerts := &ca.CACerts{Cert: inter, Key: clusterKey, Chain: []*x509.Certificate{inter, root}, Roots: []*x509.Certificate{root}}
	files, err := cacerts.Files(ca.FormatIstio, time.Now())
	fmt.Println(inter.Subject.CommonName, inter.MaxPathLenZero, len(files), err)
	// Output: east true 4 <nil>
}
