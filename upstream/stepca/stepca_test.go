package stepca

// Tests against a real step-ca (test/stepcaenv), set up on 127.0.0.1.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/test/stepcaenv"
)

func newUpstream(t *testing.T, c *stepcaenv.CA, prov string) *Upstream {
	t.Helper()
	u, err := New(context.Background(), Options{URL: c.URL, Fingerprint: c.Fingerprint, Provisioner: prov, KeyFile: c.ProvisionerKeyFile(prov), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("New: %v\nstep-ca log:\n%s", err, c.Log())
	}
	return u
}

func newCSR(t *testing.T, cn string) (*x509.CertificateRequest, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr, key
}

// leafUnder signs a workload leaf for id under the intermediate.
func leafUnder(t *testing.T, inter *x509.Certificate, key crypto.Signer, id string) *x509.Certificate {
	t.Helper()
	lk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, inter, lk.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writePEMs(t *testing.T, name string, certs ...*x509.Certificate) string {
	t.Helper()
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// opensslVerify runs openssl verify -x509_strict on cert with chain as
// untrusted certificates and root as the only trust anchor.
func opensslVerify(t *testing.T, root *x509.Certificate, chain []*x509.Certificate, cert *x509.Certificate) error {
	t.Helper()
	args := []string{"verify", "-x509_strict", "-CAfile", writePEMs(t, "root.pem", root)}
	if len(chain) > 0 {
		args = append(args, "-untrusted", writePEMs(t, "chain.pem", chain...))
	}
	args = append(args, writePEMs(t, "cert.pem", cert))
	out, err := exec.Command("openssl", args...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		return &opensslError{out: string(out)}
	}
	return nil
}

type opensslError struct{ out string }

func (e *opensslError) Error() string { return "openssl verify: " + e.out }

func verifyGo(leaf *x509.Certificate, chain []*x509.Certificate) error {
	roots, mids := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(chain[len(chain)-1])
	for _, c := range chain[:len(chain)-1] {
		mids.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: mids, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

func TestIntermediateFromStepCA(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not on PATH")
	}
	c := stepcaenv.Start(t, stepcaenv.Options{})
	u := newUpstream(t, c, stepcaenv.Intermediate)
	ctx := context.Background()

	chain, err := u.Chain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 || !chain[0].Equal(c.Issuer) || !chain[1].Equal(c.Root) {
		t.Fatalf("Chain: %d certificates, want [step-ca's intermediate, root]", len(chain))
	}

	csr, key := newCSR(t, "east")
	got, err := u.SignIntermediate(ctx, csr, "east", 30*24*time.Hour)
	if err != nil {
		t.Fatalf("SignIntermediate: %v\nstep-ca log:\n%s", err, c.Log())
	}
	inter := got[0]
	if len(got) != 3 || !got[1].Equal(c.Issuer) || !got[2].Equal(c.Root) {
		t.Fatalf("SignIntermediate returned %d certificates, want [intermediate, step-ca's intermediate, root]", len(got))
	}
	if !inter.IsCA || inter.MaxPathLen != 0 || !inter.MaxPathLenZero || inter.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("not a pathlen-0 CA with keyCertSign: IsCA %v MaxPathLen %d zero %v usage %b", inter.IsCA, inter.MaxPathLen, inter.MaxPathLenZero, inter.KeyUsage)
	}
	if !key.PublicKey.Equal(inter.PublicKey) || inter.Subject.CommonName != "east" {
		t.Errorf("intermediate %q does not carry the CSR's key and the cluster's name", inter.Subject)
	}
	if len(inter.PermittedURIDomains) != 0 {
		t.Errorf("unconstrained request got name constraints %v", inter.PermittedURIDomains)
	}
	if d := time.Until(inter.NotAfter) - 30*24*time.Hour; d > 2*time.Minute || d < -2*time.Minute {
		t.Errorf("NotAfter %s is not 30 days from now", inter.NotAfter)
	}
	if err := verifyGo(inter, got); err != nil {
		t.Errorf("Go does not verify the intermediate: %v", err)
	}
	if err := opensslVerify(t, c.Root, got[1:2], inter); err != nil {
		t.Error(err)
	}
	// A workload leaf under it verifies; a CA under it does not (pathlen 0).
	leaf := leafUnder(t, inter, key, "spiffe://example.org/ns/default/sa/a")
	if err := opensslVerify(t, c.Root, got[:2], leaf); err != nil {
		t.Errorf("workload leaf: %v", err)
	}
	if err := verifyGo(leaf, append([]*x509.Certificate{inter}, got...)); err != nil {
		t.Errorf("workload leaf: Go: %v", err)
	}
}

func TestConstrainedIntermediateFromStepCA(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not on PATH")
	}
	c := stepcaenv.Start(t, stepcaenv.Options{NoDB: true})
	u := newUpstream(t, c, stepcaenv.Intermediate)
	csr, key := newCSR(t, "east")
	got, err := u.SignConstrainedIntermediate(context.Background(), csr, "east", "example.org", 48*time.Hour)
	if err != nil {
		t.Fatalf("SignConstrainedIntermediate: %v\nstep-ca log:\n%s", err, c.Log())
	}
	inter := got[0]
	if !inter.PermittedDNSDomainsCritical || len(inter.PermittedURIDomains) != 1 || inter.PermittedURIDomains[0] != "example.org" ||
		len(inter.ExcludedURIDomains) != 1 || inter.ExcludedURIDomains[0] != ".example.org" {
		t.Fatalf("name constraints: critical %v permitted %v excluded %v", inter.PermittedDNSDomainsCritical, inter.PermittedURIDomains, inter.ExcludedURIDomains)
	}
	if len(inter.URIs) != 0 || len(inter.DNSNames) != 0 {
		t.Errorf("intermediate carries SANs %v %v", inter.URIs, inter.DNSNames)
	}
	if err := opensslVerify(t, c.Root, got[1:2], inter); err != nil {
		t.Error(err)
	}
	full := append([]*x509.Certificate{inter}, got...)
	good := leafUnder(t, inter, key, "spiffe://example.org/ns/default/sa/a")
	if err := verifyGo(good, full); err != nil {
		t.Errorf("leaf in the trust domain: %v", err)
	}
	if err := opensslVerify(t, c.Root, got[:2], good); err != nil {
		t.Errorf("leaf in the trust domain: %v", err)
	}
	for _, id := range []string{"spiffe://other.org/ns/default/sa/a", "spiffe://sub.example.org/ns/default/sa/a"} {
		bad := leafUnder(t, inter, key, id)
		if err := verifyGo(bad, full); err == nil {
			t.Errorf("Go verified a leaf for %s under an intermediate constrained to example.org", id)
		}
		if err := opensslVerify(t, c.Root, got[:2], bad); err == nil {
			t.Errorf("openssl verified a leaf for %s under an intermediate constrained to example.org", id)
		}
	}
}

// TestStepCARefusals: what step-ca returns is checked, and set-ups that
// cannot work are refused when the upstream is opened.
func TestStepCARefusals(t *testing.T) {
	c := stepcaenv.Start(t, stepcaenv.Options{NoDB: true})
	ctx := context.Background()

	t.Run("provisioner template makes a leaf", func(t *testing.T) {
		u := newUpstream(t, c, stepcaenv.Leaf)
		csr, _ := newCSR(t, "east")
		_, err := u.SignIntermediate(ctx, csr, "east", 48*time.Hour)
		if err == nil || !strings.Contains(err.Error(), "not a CA certificate") || !strings.Contains(err.Error(), "refuses") {
			t.Fatalf("a leaf from step-ca was not refused as not a CA: %v", err)
		}
	})
	t.Run("template without the name constraint", func(t *testing.T) {
		u := newUpstream(t, c, stepcaenv.Unconstrained)
		csr, _ := newCSR(t, "east")
		if _, err := u.SignIntermediate(ctx, csr, "east", 48*time.Hour); err != nil {
			t.Fatalf("unconstrained request: %v", err)
		}
		_, err := u.SignConstrainedIntermediate(ctx, csr, "east", "example.org", 48*time.Hour)
		if err == nil || !strings.Contains(err.Error(), "name constraints") {
			t.Fatalf("an intermediate without the asked-for constraint was not refused: %v", err)
		}
	})
	t.Run("CSR named for another cluster", func(t *testing.T) {
		u := newUpstream(t, c, stepcaenv.Intermediate)
		csr, _ := newCSR(t, "west")
		_, err := u.SignIntermediate(ctx, csr, "east", 48*time.Hour)
		if err == nil || !strings.Contains(err.Error(), "common name") {
			t.Fatalf("want a refusal naming the CSR's common name, got %v", err)
		}
	})
	t.Run("lifetime beyond the provisioner's maximum", func(t *testing.T) {
		u := newUpstream(t, c, stepcaenv.Intermediate)
		csr, _ := newCSR(t, "east")
		_, err := u.SignIntermediate(ctx, csr, "east", 10000*time.Hour)
		if err == nil || !strings.Contains(err.Error(), "step-ca") {
			t.Fatalf("want step-ca's refusal of 10000h, got %v", err)
		}
	})
	t.Run("wrong fingerprint", func(t *testing.T) {
		_, err := New(ctx, Options{URL: c.URL, Fingerprint: strings.Repeat("ab", 32), Provisioner: stepcaenv.Intermediate, KeyFile: c.ProvisionerKeyFile(stepcaenv.Intermediate), Timeout: 5 * time.Second})
		if err == nil || !strings.Contains(err.Error(), "fingerprint") {
			t.Fatalf("want a fingerprint refusal, got %v", err)
		}
	})
	t.Run("wrong provisioner key", func(t *testing.T) {
		u, err := New(ctx, Options{URL: c.URL, Fingerprint: c.Fingerprint, Provisioner: stepcaenv.Intermediate, KeyFile: c.ProvisionerKeyFile(stepcaenv.Leaf), Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err) // the key is only used when signing
		}
		csr, _ := newCSR(t, "east")
		if _, err := u.SignIntermediate(ctx, csr, "east", 48*time.Hour); err == nil {
			t.Fatal("step-ca signed with a token from another provisioner's key")
		}
	})
	t.Run("no key and no password", func(t *testing.T) {
		_, err := New(ctx, Options{URL: c.URL, Fingerprint: c.Fingerprint, Provisioner: stepcaenv.Intermediate})
		if err == nil || !strings.Contains(err.Error(), "key file") {
			t.Fatalf("want a refusal asking for the key, got %v", err)
		}
	})
}

// TestProvisionerKeyFromStepCA: with a password and no key file, the
// provisioner's encrypted key is fetched from step-ca and decrypted.
func TestProvisionerKeyFromStepCA(t *testing.T) {
	c := stepcaenv.Start(t, stepcaenv.Options{NoDB: true})
	ctx := context.Background()
	u, err := New(ctx, Options{URL: c.URL, Fingerprint: c.Fingerprint, Provisioner: stepcaenv.Intermediate, Password: stepcaenv.KeyPassword})
	if err != nil {
		t.Fatalf("New with the encrypted key: %v\nstep-ca log:\n%s", err, c.Log())
	}
	csr, _ := newCSR(t, "east")
	if _, err := u.SignIntermediate(ctx, csr, "east", 48*time.Hour); err != nil {
		t.Fatalf("SignIntermediate with the fetched key: %v", err)
	}
	_, err = New(ctx, Options{URL: c.URL, Fingerprint: c.Fingerprint, Provisioner: stepcaenv.Intermediate, Password: "wrong"})
	if err == nil {
		t.Fatal("a wrong password decrypted the provisioner key")
	}
	t.Logf("wrong password: %v", err)
}

func TestStepCAIssuerPathLenZero(t *testing.T) {
	c := stepcaenv.Start(t, stepcaenv.Options{NoDB: true, IssuerPathLenZero: true})
	_, err := New(context.Background(), Options{URL: c.URL, Fingerprint: c.Fingerprint, Provisioner: stepcaenv.Intermediate, KeyFile: c.ProvisionerKeyFile(stepcaenv.Intermediate)})
	if err == nil || !strings.Contains(err.Error(), "path length 0") {
		t.Fatalf("an issuer that cannot sign CAs was not refused: %v", err)
	}
}

func TestStepCADown(t *testing.T) {
	c := stepcaenv.Start(t, stepcaenv.Options{NoDB: true})
	u := newUpstream(t, c, stepcaenv.Intermediate)
	c.Stop()
	ctx := context.Background()
	csr, _ := newCSR(t, "east")
	start := time.Now()
	_, err := u.SignIntermediate(ctx, csr, "east", 48*time.Hour)
	if err == nil || !strings.Contains(err.Error(), "is step-ca running") {
		t.Fatalf("want a clear error with step-ca down, got %v", err)
	}
	t.Logf("step-ca down: %v", err)
	if _, err := New(ctx, Options{URL: c.URL, Fingerprint: c.Fingerprint, Provisioner: stepcaenv.Intermediate, KeyFile: c.ProvisionerKeyFile(stepcaenv.Intermediate)}); err == nil || !strings.Contains(err.Error(), "is step-ca running") {
		t.Fatalf("New with step-ca down: want a clear error, got %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("failing took %s", d)
	}

	// A server that accepts connections and never answers: the deadline
	// ends the wait (stepcas itself has no timeout).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
		}
	}()
	// New against the silent server, with ctx and the upstream's timeout:
	// how long it held the caller, and its error.
	silent := func(ctx context.Context, timeout time.Duration) (time.Duration, error) {
		start := time.Now()
		_, err := New(ctx, Options{URL: "https://" + l.Addr().String(), Fingerprint: c.Fingerprint, Provisioner: stepcaenv.Intermediate, KeyFile: c.ProvisionerKeyFile(stepcaenv.Intermediate), Timeout: timeout})
		return time.Since(start), err
	}
	d, err := silent(ctx, 2*time.Second)
	if err == nil || !strings.Contains(err.Error(), "no answer within 2s") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a silent server: want a timeout error that is context.DeadlineExceeded, got %v", err)
	}
	if d > 5*time.Second {
		t.Errorf("a silent server held New for %s", d)
	}
	// The caller's deadline, shorter than the upstream's timeout, ends the
	// wait too, and is reported as the caller's: still a deadline, which
	// the plugin boundary carries as one (internal/pluginhost).
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	d, err = silent(short, 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), "the caller stopped waiting") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a silent server and a caller's 500ms deadline: want the caller's deadline, got %v", err)
	}
	if d > 5*time.Second {
		t.Errorf("the caller's 500ms deadline held New for %s", d)
	}
}
