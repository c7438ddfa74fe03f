package stepca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/test/stepcaenv"
)

// TestServerTemplateMatchesTestEnv: the test step-ca runs the template this
// package documents.
func TestServerTemplateMatchesTestEnv(t *testing.T) {
	if stepcaenv.ServerTemplate != ServerTemplate {
		t.Fatal("stepcaenv.ServerTemplate differs from stepca.ServerTemplate")
	}
}

// TestServerCAFromStepCA: the real step-ca, through the server provisioner
// (named by default from the intermediate provisioner), signs a server CA
// that ca.IsServerCA accepts, constrained to the server's names, under
// step-ca's root; a TLS leaf it signs passes ca.VerifyServerChain.
func TestServerCAFromStepCA(t *testing.T) {
	c := stepcaenv.Start(t, stepcaenv.Options{})
	ctx := context.Background()
	u, err := New(ctx, Options{URL: c.URL, Fingerprint: c.Fingerprint, Provisioner: stepcaenv.Intermediate,
		KeyFile: c.ProvisionerKeyFile(stepcaenv.Intermediate), ServerKeyFile: c.ProvisionerKeyFile(stepcaenv.Server), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("New: %v\nstep-ca log:\n%s", err, c.Log())
	}
	if u.opts.ServerProvisioner != stepcaenv.Server {
		t.Fatalf("default server provisioner %q, want %q", u.opts.ServerProvisioner, stepcaenv.Server)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	names := ca.ParseServerNames([]string{"meshroot.example", "127.0.0.1"})
	csr, err := ca.NewServerCACSR(key, "example.org", names)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := u.SignServerCA(ctx, csr, ca.ServerCATTL)
	if err != nil {
		t.Fatalf("SignServerCA: %v\nstep-ca log:\n%s", err, c.Log())
	}
	if len(chain) != 3 || !chain[1].Equal(c.Issuer) || !chain[2].Equal(c.Root) {
		t.Fatalf("SignServerCA returned %d certificates, want [server CA, step-ca's intermediate, root]", len(chain))
	}
	sca := chain[0]
	if !ca.IsServerCA(sca) || !key.PublicKey.Equal(sca.PublicKey) {
		t.Fatalf("%q is not a server CA for the request's key", sca.Subject)
	}
	if !sca.PermittedDNSDomainsCritical || strings.Join(sca.PermittedDNSDomains, ",") != "meshroot.example" ||
		len(sca.PermittedIPRanges) != 1 || len(sca.PermittedURIDomains) != 1 || sca.PermittedURIDomains[0] != "example.org" {
		t.Errorf("name constraints not copied: DNS %v IP %v URI %v", sca.PermittedDNSDomains, sca.PermittedIPRanges, sca.PermittedURIDomains)
	}
	if d := time.Until(sca.NotAfter) - ca.ServerCATTL; d > 2*time.Minute || d < -2*time.Minute {
		t.Errorf("NotAfter %s is not %s from now", sca.NotAfter, ca.ServerCATTL)
	}
	roots := x509.NewCertPool()
	roots.AddCert(c.Root)
	ok := serverLeaf(t, sca, key, "meshroot.example")
	if err := ca.VerifyServerChain(append([]*x509.Certificate{ok}, chain[:2]...), roots, "meshroot.example", time.Now()); err != nil {
		t.Errorf("VerifyServerChain: %v", err)
	}
	// The name constraints hold: a leaf for another name is refused.
	bad := serverLeaf(t, sca, key, "other.example")
	if err := ca.VerifyServerChain(append([]*x509.Certificate{bad}, chain[:2]...), roots, "other.example", time.Now()); err == nil {
		t.Error("a leaf for a name outside the server CA's constraints verified")
	}
}

// TestServerCARefused: a provisioner whose template does not copy the
// request (the cluster-intermediate-style Unconstrained one) yields a CA
// without the marker, and meshroot refuses it; a missing provisioner is
// named in the error.
func TestServerCARefused(t *testing.T) {
	c := stepcaenv.Start(t, stepcaenv.Options{})
	ctx := context.Background()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ca.NewServerCACSR(key, "example.org", ca.ParseServerNames([]string{"meshroot.example"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ prov, keyProv, want string }{
		{stepcaenv.Unconstrained, stepcaenv.Unconstrained, "is not a meshroot server CA"},
		{"absent", stepcaenv.Server, "with provisioner absent"},
	} {
		u, err := New(ctx, Options{URL: c.URL, Fingerprint: c.Fingerprint, Provisioner: stepcaenv.Intermediate,
			KeyFile: c.ProvisionerKeyFile(stepcaenv.Intermediate), ServerProvisioner: tc.prov, ServerKeyFile: c.ProvisionerKeyFile(tc.keyProv), Timeout: 10 * time.Second})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		if _, err := u.SignServerCA(ctx, csr, ca.ServerCATTL); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: SignServerCA error %v, want one containing %q", tc.prov, err, tc.want)
		}
	}
}

// serverLeaf signs a TLS server leaf for dns under the server CA.
func serverLeaf(t *testing.T, sca *x509.Certificate, key *ecdsa.PrivateKey, dns string) *x509.Certificate {
	t.Helper()
	lk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: dns}, DNSNames: []string{dns},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, sca, &lk.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}
