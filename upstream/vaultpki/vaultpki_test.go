package vaultpki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/vaultclient"
	"github.com/meshroot/meshroot/test/vaultenv"
)

// signerPolicy is what meshroot needs on a PKI mount.
const signerPolicy = `
path "pki/root/sign-intermediate" { capabilities = ["update"] }
path "pki/issuer/+/sign-intermediate" { capabilities = ["update"] }
path "pki/issuer/+/json" { capabilities = ["read"] }
path "pki/cert/ca_chain" { capabilities = ["read"] }
`

func newVault(t testing.TB) (*vaultenv.Vault, *x509.Certificate) {
	t.Helper()
	v := vaultenv.Start(t)
	root := v.EnablePKI(t, "pki")
	v.PutPolicy(t, "pki-signer", signerPolicy)
	return v, root
}

func newUpstream(t testing.TB, o Options) *Upstream {
	t.Helper()
	u, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

func tokenAuth(tok string) vaultclient.Auth { return vaultclient.Auth{Token: tok} }

func newCSR(t testing.TB) (*x509.CertificateRequest, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr, key
}

// verifyChain checks chain with Go's verifier against its last certificate
// and the intermediate profile, and that the intermediate can issue a
// workload leaf but not another CA.
func verifyChain(t *testing.T, chain []*x509.Certificate, key *ecdsa.PrivateKey, cluster string, root *x509.Certificate) {
	t.Helper()
	inter := chain[0]
	if !chain[len(chain)-1].Equal(root) {
		t.Fatalf("chain ends at %q, want root %q", chain[len(chain)-1].Subject, root.Subject)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	mids := x509.NewCertPool()
	for _, c := range chain[1 : len(chain)-1] {
		mids.AddCert(c)
	}
	if _, err := inter.Verify(x509.VerifyOptions{Roots: roots, Intermediates: mids, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("intermediate does not verify: %v", err)
	}
	if !inter.IsCA || inter.MaxPathLen != 0 || !inter.MaxPathLenZero || inter.KeyUsage&x509.KeyUsageCertSign == 0 || inter.Subject.CommonName != cluster {
		t.Errorf("intermediate profile: CA %v pathlen %d/%v usage %v CN %q", inter.IsCA, inter.MaxPathLen, inter.MaxPathLenZero, inter.KeyUsage, inter.Subject.CommonName)
	}
	if !inter.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Error("intermediate's key is not the CSR's")
	}
	mids.AddCert(inter)
	// issue makes a certificate under parent (whose key is parentKey).
	issue := func(parent *x509.Certificate, parentKey crypto.Signer, isCA bool) (*x509.Certificate, crypto.Signer) {
		t.Helper()
		wk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
			URIs:        []*url.URL{{Scheme: "spiffe", Host: "example.org", Path: "/ns/default/sa/web"}},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			IsCA:        isCA, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature,
		}
		if isCA {
			tmpl.KeyUsage |= x509.KeyUsageCertSign
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, wk.Public(), parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c, wk
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: mids, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	leaf, _ := issue(inter, key, false)
	if _, err := leaf.Verify(opts); err != nil {
		t.Errorf("a workload certificate under the intermediate does not verify: %v", err)
	}
	// A CA under the pathlen-0 intermediate must not yield verifiable leaves.
	sub, subKey := issue(inter, key, true)
	under, _ := issue(sub, subKey, false)
	opts.Intermediates = mids.Clone()
	opts.Intermediates.AddCert(sub)
	if _, err := under.Verify(opts); err == nil {
		t.Error("a leaf under a CA under the pathlen-0 intermediate verifies")
	}
}

func TestIntermediatesForTwoClusters(t *testing.T) {
	v, root := newVault(t)
	u := newUpstream(t, Options{Vault: vaultclient.Config{Address: v.Addr, Auth: tokenAuth(v.Token(t, "pki-signer"))}})
	ctx := context.Background()
	chain, err := u.Chain(ctx)
	if err != nil || len(chain) != 1 || !chain[0].Equal(root) {
		t.Fatalf("Chain = %v, %v", chain, err)
	}
	for _, cluster := range []string{"cluster-a", "cluster-b"} {
		csr, key := newCSR(t)
		chain, err := u.SignIntermediate(ctx, csr, cluster, 30*24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if len(chain) != 2 {
			t.Fatalf("chain of %d certificates", len(chain))
		}
		verifyChain(t, chain, key, cluster, root)
		if d := chain[0].NotAfter.Sub(time.Now()); d < 30*24*time.Hour-5*time.Minute || d > 30*24*time.Hour+time.Minute {
			t.Errorf("lifetime %s, want 30 days", d)
		}
		if len(chain[0].DNSNames) != 0 {
			t.Errorf("Vault put the cluster name in DNS SANs: %v", chain[0].DNSNames)
		}
	}
}

func TestAppRoleAndPermissionDenied(t *testing.T) {
	v, root := newVault(t)
	ctx := context.Background()
	roleID, secretID := v.AppRole(t, "meshroot", "pki-signer")
	u := newUpstream(t, Options{Vault: vaultclient.Config{Address: v.Addr, Auth: vaultclient.Auth{Method: "approle", RoleID: roleID, SecretIDFile: vaultenv.WriteFile(t, "sid", secretID)}}})
	csr, key := newCSR(t)
	chain, err := u.SignIntermediate(ctx, csr, "cluster-a", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	verifyChain(t, chain, key, "cluster-a", root)

	// A role that may read the CA but not sign intermediates.
	v.PutPolicy(t, "pki-reader", `path "pki/issuer/+/json" { capabilities = ["read"] }`)
	roleID, secretID = v.AppRole(t, "reader", "pki-reader")
	ro := newUpstream(t, Options{Vault: vaultclient.Config{Address: v.Addr, Auth: vaultclient.Auth{Method: "approle", RoleID: roleID, SecretIDFile: vaultenv.WriteFile(t, "sid2", secretID)}}})
	_, err = ro.SignIntermediate(ctx, csr, "cluster-a", 24*time.Hour)
	if err == nil {
		t.Fatal("a role without sign-intermediate signed")
	}
	t.Log(err)
	for _, want := range []string{"vault-pki upstream: sign the intermediate of cluster cluster-a", "permission denied", `"update" on "pki/root/sign-intermediate"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	// The same policy, issuer-specific path.
	ro2 := newUpstream(t, Options{Vault: vaultclient.Config{Address: v.Addr, Auth: vaultclient.Auth{Method: "approle", RoleID: roleID, SecretIDFile: vaultenv.WriteFile(t, "sid3", secretID)}}, Issuer: "root-1"})
	if _, err := ro2.SignIntermediate(ctx, csr, "cluster-a", 24*time.Hour); err == nil || !strings.Contains(err.Error(), `"pki/issuer/root-1/sign-intermediate"`) {
		t.Errorf("issuer path without permission: %v", err)
	}
}

func TestIssuerSpecificPathOnMultiIssuerMount(t *testing.T) {
	v, root1 := newVault(t)
	root2 := v.GenerateRoot(t, "pki", "root-2", "meshroot second root")
	tok := v.Token(t, "pki-signer")
	ctx := context.Background()
	byDefault := newUpstream(t, Options{Vault: vaultclient.Config{Address: v.Addr, Auth: tokenAuth(tok)}})
	second := newUpstream(t, Options{Vault: vaultclient.Config{Address: v.Addr, Auth: tokenAuth(tok)}, Issuer: "root-2"})
	for _, c := range []struct {
		u    *Upstream
		root *x509.Certificate
	}{{byDefault, root1}, {second, root2}} {
		csr, key := newCSR(t)
		chain, err := c.u.SignIntermediate(ctx, csr, "cluster-a", 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		verifyChain(t, chain, key, "cluster-a", c.root)
	}
	_, err := New(ctx, Options{Vault: vaultclient.Config{Address: v.Addr, Auth: tokenAuth(tok)}, Issuer: "nope"})
	if err == nil || !strings.Contains(err.Error(), "pki/issuer/nope/json") {
		t.Errorf("unknown issuer: %v", err)
	} else {
		t.Log(err)
	}
}

// TestVaultIntermediateIssuer signs cluster intermediates with a Vault
// intermediate (in its own mount) under the Vault root: a chain of three.
func TestVaultIntermediateIssuer(t *testing.T) {
	v, root := newVault(t)
	c := v.Client(t)
	ctx := context.Background()
	for _, spec := range []struct {
		mount   string
		pathLen int
	}{{"pki_int", -1}, {"pki_int0", 0}} {
		if err := c.Sys().Mount(spec.mount, &api.MountInput{Type: "pki", Config: api.MountConfigInput{MaxLeaseTTL: "87600h"}}); err != nil {
			t.Fatal(err)
		}
		s, err := c.Logical().Write(spec.mount+"/intermediate/generate/internal", map[string]any{"common_name": "vault intermediate " + spec.mount, "key_type": "ec"})
		if err != nil {
			t.Fatal(err)
		}
		data := map[string]any{"csr": s.Data["csr"], "common_name": "vault intermediate " + spec.mount, "ttl": "8760h", "format": "pem_bundle"}
		if spec.pathLen >= 0 {
			data["max_path_length"] = spec.pathLen
		}
		signed, err := c.Logical().Write("pki/root/sign-intermediate", data)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Logical().Write(spec.mount+"/intermediate/set-signed", map[string]any{"certificate": signed.Data["certificate"]}); err != nil {
			t.Fatal(err)
		}
	}
	v.PutPolicy(t, "int-signer", strings.ReplaceAll(signerPolicy, "pki/", "pki_int/"))
	u := newUpstream(t, Options{Vault: vaultclient.Config{Address: v.Addr, Auth: tokenAuth(v.Token(t, "int-signer"))}, Mount: "pki_int"})
	csr, key := newCSR(t)
	chain, err := u.SignIntermediate(ctx, csr, "cluster-a", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 3 {
		t.Fatalf("chain of %d, want intermediate, Vault intermediate, root", len(chain))
	}
	verifyChain(t, chain, key, "cluster-a", root)

	_, err = New(ctx, Options{Vault: vaultclient.Config{Address: v.Addr, Auth: tokenAuth(v.RootToken)}, Mount: "pki_int0"})
	if err == nil || !strings.Contains(err.Error(), "has path length 0") {
		t.Errorf("pathlen-0 issuer: %v", err)
	}
}

// tamper puts a proxy in front of Vault that rewrites sign-intermediate
// requests, as a misconfigured or compromised Vault would answer.
func tamper(t *testing.T, v *vaultenv.Vault, edit func(map[string]any)) string {
	t.Helper()
	target, _ := url.Parse(v.Addr)
	proxy := httputil.NewSingleHostReverseProxy(target)
	director := proxy.Director
	proxy.Director = func(r *http.Request) {
		director(r)
		if !strings.HasSuffix(r.URL.Path, "/sign-intermediate") || r.Body == nil {
			return
		}
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Error(err)
			return
		}
		edit(body)
		b, _ := json.Marshal(body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		r.ContentLength = int64(len(b))
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestRefusesWhatItDidNotAskFor(t *testing.T) {
	v, _ := newVault(t)
	other, _ := newCSR(t)
	cases := []struct {
		name string
		edit func(map[string]any)
		want string
	}{
		{"unlimited path length", func(b map[string]any) { delete(b, "max_path_length") }, "path length is unlimited, not 0"},
		{"path length 1", func(b map[string]any) { b["max_path_length"] = 1 }, "path length is 1"},
		{"another key", func(b map[string]any) {
			b["csr"] = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: other.Raw}))
		}, "public key is not the CSR's"},
		{"another name", func(b map[string]any) { b["common_name"] = "cluster-b" }, `common name is "cluster-b"`},
		{"shorter life", func(b map[string]any) { b["ttl"] = "2h" }, "Vault shortened its lifetime"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u := newUpstream(t, Options{Vault: vaultclient.Config{Address: tamper(t, v, c.edit), Auth: tokenAuth(v.RootToken)}})
			csr, _ := newCSR(t)
			_, err := u.SignIntermediate(context.Background(), csr, "cluster-a", 24*time.Hour)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "returned a certificate meshroot refuses") {
				t.Fatalf("got %v, want %q", err, c.want)
			}
			t.Log(err)
		})
	}
}

// TestShortLivedIssuerCapsLifetime asks for more than the issuer has left:
// the intermediate ends with the issuer, as in the ca package.
func TestShortLivedIssuerCapsLifetime(t *testing.T) {
	v, _ := newVault(t)
	c := v.Client(t)
	if err := c.Sys().Mount("pki_short", &api.MountInput{Type: "pki", Config: api.MountConfigInput{MaxLeaseTTL: "87600h"}}); err != nil {
		t.Fatal(err)
	}
	s, err := c.Logical().Write("pki_short/root/generate/internal", map[string]any{"common_name": "short root", "key_type": "ec", "ttl": "48h"})
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(s.Data["certificate"].(string)))
	root, _ := x509.ParseCertificate(block.Bytes)
	u := newUpstream(t, Options{Vault: vaultclient.Config{Address: v.Addr, Auth: tokenAuth(v.RootToken)}, Mount: "pki_short"})
	csr, key := newCSR(t)
	chain, err := u.SignIntermediate(context.Background(), csr, "cluster-a", 72*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	verifyChain(t, chain, key, "cluster-a", root)
	if d := root.NotAfter.Sub(chain[0].NotAfter); d < 0 || d > 5*time.Second {
		t.Errorf("intermediate NotAfter %s, root's %s", chain[0].NotAfter, root.NotAfter)
	}
}

func TestSealedAndRestartedVault(t *testing.T) {
	v := vaultenv.StartPersistent(t)
	root := v.EnablePKI(t, "pki")
	v.PutPolicy(t, "pki-signer", signerPolicy)
	u := newUpstream(t, Options{Vault: vaultclient.Config{Address: v.Addr, Auth: tokenAuth(v.Token(t, "pki-signer"))}})
	ctx := context.Background()
	csr, key := newCSR(t)
	v.Seal(t)
	_, err := u.SignIntermediate(ctx, csr, "cluster-a", 24*time.Hour)
	if err == nil || !strings.Contains(err.Error(), "is sealed") {
		t.Fatalf("sealed: %v", err)
	}
	v.Unseal(t)
	if _, err := u.SignIntermediate(ctx, csr, "cluster-a", 24*time.Hour); err != nil {
		t.Fatalf("after unseal: %v", err)
	}
	v.Stop(t)
	if _, err := u.SignIntermediate(ctx, csr, "cluster-a", 24*time.Hour); err == nil || !strings.Contains(err.Error(), "cannot reach Vault") {
		t.Fatalf("stopped: %v", err)
	}
	v.Restart(t)
	chain, err := u.SignIntermediate(ctx, csr, "cluster-a", 24*time.Hour)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	verifyChain(t, chain, key, "cluster-a", root)
}

func TestBadInput(t *testing.T) {
	v, _ := newVault(t)
	u := newUpstream(t, Options{Vault: vaultclient.Config{Address: v.Addr, Auth: tokenAuth(v.RootToken)}})
	csr, _ := newCSR(t)
	ctx := context.Background()
	bad := *csr
	bad.Signature = append([]byte(nil), csr.Signature...)
	bad.Signature[len(bad.Signature)-3] ^= 0xff
	for want, call := range map[string]func() error{
		"cluster name":     func() error { _, err := u.SignIntermediate(ctx, csr, "Cluster_A", time.Hour); return err },
		"no CSR":           func() error { _, err := u.SignIntermediate(ctx, nil, "a", time.Hour); return err },
		"must be positive": func() error { _, err := u.SignIntermediate(ctx, csr, "a", 0); return err },
		"CSR signature":    func() error { _, err := u.SignIntermediate(ctx, &bad, "a", time.Hour); return err },
		"mount path": func() error {
			_, err := New(ctx, Options{Vault: vaultclient.Config{Address: v.Addr, Auth: tokenAuth("x")}, Mount: "a b"})
			return err
		},
		"issuer reference": func() error {
			_, err := New(ctx, Options{Vault: vaultclient.Config{Address: v.Addr, Auth: tokenAuth("x")}, Issuer: "a/b"})
			return err
		},
		"no such issuer": func() error {
			_, err := New(ctx, Options{Vault: vaultclient.Config{Address: v.Addr, Auth: tokenAuth(v.RootToken)}, Mount: "nomount"})
			return err
		},
		"look up the Vault token": func() error {
			_, err := New(ctx, Options{Vault: vaultclient.Config{Address: v.Addr, Auth: tokenAuth("bogus")}})
			return err
		},
	} {
		err := call()
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "vault-pki upstream: ") {
			t.Errorf("%s: %v", want, err)
		}
	}
}

// cpuMetrics reports Vault's and this process's CPU time per operation
// when the returned function runs.
func cpuMetrics(b *testing.B, v *vaultenv.Vault) func() {
	server, client := v.CPUTime(), vaultenv.SelfCPU()
	return func() {
		b.ReportMetric(float64((v.CPUTime()-server).Microseconds())/float64(b.N), "vault-cpu-us/op")
		b.ReportMetric(float64((vaultenv.SelfCPU()-client).Microseconds())/float64(b.N), "client-cpu-us/op")
	}
}

// BenchmarkSignIntermediate compares meshroot's SignIntermediate (Vault's
// sign-intermediate plus meshroot's checks) with the bare vault/api call,
// in one run against one dev server, 8 client goroutines each.
func BenchmarkSignIntermediate(b *testing.B) {
	v, _ := newVault(b)
	u := newUpstream(b, Options{Vault: vaultclient.Config{Address: v.Addr, Auth: tokenAuth(v.RootToken)}})
	csr, _ := newCSR(b)
	ctx := context.Background()
	b.Run("meshroot", func(b *testing.B) {
		b.SetParallelism(4)
		defer cpuMetrics(b, v)()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := u.SignIntermediate(ctx, csr, "cluster-a", 24*time.Hour); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
	})
	b.Run("vault-api", func(b *testing.B) {
		c := v.Client(b)
		data := map[string]any{
			"csr":             string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw})),
			"common_name":     "cluster-a",
			"ttl":             "86400s",
			"max_path_length": 0,
			"use_csr_values":  false,
			"format":          "pem_bundle",
		}
		var once sync.Once
		b.SetParallelism(4)
		defer cpuMetrics(b, v)()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				s, err := c.Logical().WriteWithContext(ctx, "pki/root/sign-intermediate", data)
				if err != nil || s == nil {
					once.Do(func() { b.Error(err) })
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
	})
}

// TestServerCA: Vault signs meshroot's server CA from the request meshroot
// builds, copying its marker subject, extended key usage and name constraints
// (use_csr_values), and the result is what agents pin; a cluster's CSR
// that asks for the same extensions gets none of them.
func TestServerCA(t *testing.T) {
	v, root := newVault(t)
	u := newUpstream(t, Options{Vault: vaultclient.Config{Address: v.Addr, Auth: tokenAuth(v.Token(t, "pki-signer"))}})
	ctx := context.Background()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := ca.NewServerCACSR(key, "example.org", ca.ParseServerNames([]string{"meshroot.example.com", "127.0.0.1"}))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := u.SignServerCA(ctx, csr, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sca := chain[0]
	if !ca.IsServerCA(sca) || len(sca.ExtKeyUsage) != 1 || sca.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth ||
		len(sca.PermittedDNSDomains) != 1 || len(sca.PermittedURIDomains) != 1 || !chain[len(chain)-1].Equal(root) {
		t.Fatalf("Vault's server CA: IsServerCA %v, EKU %v, DNS %v, URI %v", ca.IsServerCA(sca), sca.ExtKeyUsage, sca.PermittedDNSDomains, sca.PermittedURIDomains)
	}

	// A cluster's CSR asking for the server CA's extensions.
	ck, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	evil, err := ca.NewServerCACSR(ck, "example.org", ca.ServerNames{})
	if err != nil {
		t.Fatal(err)
	}
	inter, err := u.SignIntermediate(ctx, evil, "cluster-a", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if ca.IsServerCA(inter[0]) || len(inter[0].Subject.OrganizationalUnit) != 0 || len(inter[0].ExtKeyUsage) != 0 {
		t.Fatalf("a cluster intermediate got the server CA's subject or extensions from its CSR: OU %v EKU %v", inter[0].Subject.OrganizationalUnit, inter[0].ExtKeyUsage)
	}
}
