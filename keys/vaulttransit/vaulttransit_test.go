package vaulttransit

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/vaultclient"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/keystest"
	"github.com/meshroot/meshroot/test/vaultenv"
)

// signPolicy lets a token use (not create) Transit keys.
const signPolicy = `
path "transit/keys/*" { capabilities = ["read", "list"] }
path "transit/keys" { capabilities = ["list"] }
path "transit/sign/*" { capabilities = ["update"] }
`

// adminPolicy also lets it create keys.
const adminPolicy = `
path "transit/keys/*" { capabilities = ["create", "read", "update", "list"] }
path "transit/keys" { capabilities = ["list"] }
path "transit/sign/*" { capabilities = ["update"] }
`

func newVault(t *testing.T) *vaultenv.Vault {
	t.Helper()
	v := vaultenv.Start(t)
	v.EnableTransit(t, "transit")
	v.PutPolicy(t, "transit-sign", signPolicy)
	v.PutPolicy(t, "transit-admin", adminPolicy)
	return v
}

func newKM(t testing.TB, addr string, auth vaultclient.Auth) *KeyManager {
	t.Helper()
	km, err := New(context.Background(), Options{Vault: vaultclient.Config{Address: addr, Auth: auth}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { km.Close() })
	return km
}

func tokenAuth(tok string) vaultclient.Auth { return vaultclient.Auth{Method: "token", Token: tok} }

// TestConformance runs the key manager suite on a real Vault's Transit
// engine, opened through the key catalog with a token that may create and
// use keys but not delete them.
func TestConformance(t *testing.T) {
	t.Parallel()
	v := newVault(t)
	cfg := keys.Config{Vault: vaultclient.Config{Address: v.Addr, Auth: tokenAuth(v.Token(t, "transit-admin"))}}
	keystest.Run(t, keystest.Backend{
		Open: func(t *testing.T) keys.KeyManager {
			km, err := keys.Open(context.Background(), "vault-transit://transit", cfg)
			if err != nil {
				t.Fatal(err)
			}
			return km
		},
		KeyTypes:   []keys.KeyType{keys.ECP256, keys.ECP384, keys.RSA4096},
		Refused:    []keys.KeyType{keys.RSA2048, keys.RSA3072},
		RefPrefix:  "vault-transit://transit/",
		MissingRef: "vault-transit://transit/missing",
	})
}

// TestRSASigningOptionsAndOtherKeys: Transit signs RSA with PSS (any salt
// length) and PKCS #1 v1.5 over SHA-2 digests; symmetric Transit keys are
// neither listed nor loaded.
func TestRSASigningOptionsAndOtherKeys(t *testing.T) {
	t.Parallel()
	v := newVault(t)
	km := newKM(t, v.Addr, tokenAuth(v.Token(t, "transit-admin")))
	ctx := context.Background()
	k, err := km.CreateKey(ctx, "root-rsa", keys.RSA4096)
	if err != nil {
		t.Fatal(err)
	}
	s, err := km.Signer(ctx, k.Ref)
	if err != nil {
		t.Fatal(err)
	}
	for _, opts := range []crypto.SignerOpts{
		&rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256},
		&rsa.PSSOptions{SaltLength: 20, Hash: crypto.SHA384},
		&rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256},
		crypto.SHA512,
	} {
		h := opts.HashFunc().New()
		h.Write([]byte("meshroot"))
		if _, err := s.Sign(rand.Reader, h.Sum(nil), opts); err != nil {
			t.Errorf("RSA sign with %#v: %v", opts, err)
		}
	}
	if _, err := v.Client(t).Logical().Write("transit/keys/aes", map[string]any{"type": "aes256-gcm96"}); err != nil {
		t.Fatal(err)
	}
	if list, err := km.ListKeys(ctx); err != nil || len(list) != 1 {
		t.Errorf("ListKeys with an AES key: %+v, %v", list, err)
	}
	if _, err := km.Signer(ctx, "vault-transit://transit/aes"); err == nil || !strings.Contains(err.Error(), "cannot sign certificates") {
		t.Errorf("Signer of an AES key: %v", err)
	}
}

func TestRotatedKeyKeepsPinnedVersion(t *testing.T) {
	t.Parallel()
	v := newVault(t)
	km := newKM(t, v.Addr, tokenAuth(v.RootToken))
	ctx := context.Background()
	k, err := km.CreateKey(ctx, "root", keys.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	s1, err := km.Signer(ctx, k.Ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Client(t).Logical().Write("transit/keys/root/rotate", nil); err != nil {
		t.Fatal(err)
	}
	// The signer loaded before the rotation still signs with version 1.
	d := sha256.Sum256([]byte("x"))
	if _, err := s1.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
		t.Fatalf("pinned signer after rotation: %v", err)
	}
	s2, err := km.Signer(ctx, k.Ref)
	if err != nil {
		t.Fatal(err)
	}
	if s2.Public().(*ecdsa.PublicKey).Equal(s1.Public()) {
		t.Error("latest version has the old public key")
	}
	s1again, err := km.Signer(ctx, k.Ref+"?version=1")
	if err != nil {
		t.Fatal(err)
	}
	if !s1again.Public().(*ecdsa.PublicKey).Equal(s1.Public()) {
		t.Error("?version=1 is not the first key")
	}
}

func TestAppRoleAuth(t *testing.T) {
	t.Parallel()
	v := newVault(t)
	roleID, secretID := v.AppRole(t, "meshroot", "transit-admin")
	km := newKM(t, v.Addr, vaultclient.Auth{Method: "approle", RoleID: roleID, SecretIDFile: vaultenv.WriteFile(t, "secret-id", secretID)})
	ctx := context.Background()
	k, err := km.CreateKey(ctx, "root", keys.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	s, err := km.Signer(ctx, k.Ref)
	if err != nil {
		t.Fatal(err)
	}
	keystest.CheckChain(t, s)
	_, err = New(ctx, Options{Vault: vaultclient.Config{Address: v.Addr, Auth: vaultclient.Auth{Method: "approle", RoleID: roleID, SecretIDFile: vaultenv.WriteFile(t, "bad", "not-the-secret")}}})
	if err == nil || !strings.Contains(err.Error(), "vault-transit key manager: log in to Vault with approle: Vault auth/approle/login") {
		t.Errorf("bad secret_id: %v", err)
	}
}

// TestShortTokensAreRenewedAndReplaced keeps signing while AppRole tokens
// of 2 s (max 4 s) come and go: renewal, then re-login at the max TTL.
func TestShortTokensAreRenewedAndReplaced(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for tokens to expire")
	}
	t.Parallel()
	v := newVault(t)
	roleID, secretID := v.AppRoleWith(t, "short", vaultenv.AppRoleOptions{Policies: []string{"transit-admin"}, TokenTTL: 2 * time.Second, TokenMaxTTL: 4 * time.Second})
	km := newKM(t, v.Addr, vaultclient.Auth{Method: "approle", RoleID: roleID, SecretIDFile: vaultenv.WriteFile(t, "secret-id", secretID)})
	ctx := context.Background()
	k, err := km.CreateKey(ctx, "root", keys.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	s, err := km.Signer(ctx, k.Ref)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	for i := 0; i < 10; i++ {
		if _, err := s.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
			t.Fatalf("sign after %d s: %v", i, err)
		}
		time.Sleep(time.Second)
	}
	// A renewable token of 2 s is kept alive by renewal alone.
	tok := v.TokenWith(t, vaultenv.TokenOptions{Policies: []string{"transit-sign"}, TTL: 2 * time.Second})
	km2 := newKM(t, v.Addr, tokenAuth(tok))
	s2, err := km2.Signer(ctx, k.Ref)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	if _, err := s2.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
		t.Fatalf("renewable 2 s token after 5 s: %v", err)
	}
}

func TestPermissionErrorsNameThePath(t *testing.T) {
	t.Parallel()
	v := newVault(t)
	admin := newKM(t, v.Addr, tokenAuth(v.RootToken))
	ctx := context.Background()
	k, err := admin.CreateKey(ctx, "root", keys.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	// A token without the transit policy cannot even read the key.
	none := newKM(t, v.Addr, tokenAuth(v.Token(t, "default")))
	_, err = none.Signer(ctx, k.Ref)
	if err == nil {
		t.Fatal("Signer without the transit policy succeeded")
	}
	t.Log(err)
	for _, want := range []string{"vault-transit key manager", "permission denied", `"transit/keys/root"`, `"read"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	// A token that may read keys but not sign.
	v.PutPolicy(t, "transit-read", `path "transit/keys/*" { capabilities = ["read"] }`)
	reader := newKM(t, v.Addr, tokenAuth(v.Token(t, "transit-read")))
	s, err := reader.Signer(ctx, k.Ref)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	_, err = s.Sign(rand.Reader, d[:], crypto.SHA256)
	if err == nil {
		t.Fatal("signing without sign permission succeeded")
	}
	t.Log(err)
	for _, want := range []string{"vault-transit key manager: sign with key root", "permission denied", `"update" on "transit/sign/root"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := reader.CreateKey(ctx, "other", keys.ECP256); err == nil || !strings.Contains(err.Error(), "transit/keys/other") {
		t.Errorf("create without permission: %v", err)
	}
}

func TestSealedMidRunRecoversOnUnseal(t *testing.T) {
	t.Parallel()
	v := newVault(t)
	km := newKM(t, v.Addr, tokenAuth(v.Token(t, "transit-admin")))
	ctx := context.Background()
	k, err := km.CreateKey(ctx, "root", keys.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	s, err := km.Signer(ctx, k.Ref)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	v.Seal(t)
	_, err = s.Sign(rand.Reader, d[:], crypto.SHA256)
	if err == nil || !strings.Contains(err.Error(), "is sealed") || !strings.Contains(err.Error(), "vault-transit key manager") {
		t.Fatalf("sign while sealed: %v", err)
	}
	t.Log(err)
	if _, err := km.Signer(ctx, k.Ref); err == nil || !strings.Contains(err.Error(), "sealed") {
		t.Errorf("Signer while sealed: %v", err)
	}
	v.Unseal(t)
	if _, err := s.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
		t.Fatalf("sign after unseal: %v", err)
	}
}

func TestVaultRestartRecovers(t *testing.T) {
	t.Parallel()
	v := vaultenv.StartPersistent(t)
	v.EnableTransit(t, "transit")
	v.PutPolicy(t, "transit-admin", adminPolicy)
	roleID, secretID := v.AppRole(t, "meshroot", "transit-admin")
	km := newKM(t, v.Addr, vaultclient.Auth{Method: "approle", RoleID: roleID, SecretIDFile: vaultenv.WriteFile(t, "secret-id", secretID)})
	ctx := context.Background()
	k, err := km.CreateKey(ctx, "root", keys.ECP384)
	if err != nil {
		t.Fatal(err)
	}
	s, err := km.Signer(ctx, k.Ref)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	v.Stop(t)
	_, err = s.Sign(rand.Reader, d[:], crypto.SHA256)
	if err == nil || !strings.Contains(err.Error(), "cannot reach Vault at "+v.Addr) {
		t.Fatalf("sign while stopped: %v", err)
	}
	t.Log(err)
	v.Restart(t)
	if _, err := s.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
		t.Fatalf("sign after restart: %v", err)
	}
	keystest.CheckChain(t, s)
}

// TestMisbehavingVaultCannotYieldABadSignature puts a proxy in front of
// Vault that swaps the signature for one made by another key.
func TestMisbehavingVaultCannotYieldABadSignature(t *testing.T) {
	t.Parallel()
	v := newVault(t)
	target, _ := url.Parse(v.Addr)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(r *http.Response) error {
		if !strings.Contains(r.Request.URL.Path, "/sign/") {
			return nil
		}
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			return err
		}
		r.Body.Close()
		d := sha256.Sum256([]byte("x"))
		sig, _ := ecdsa.SignASN1(rand.Reader, other, d[:])
		body["data"].(map[string]any)["signature"] = "vault:v1:" + base64.StdEncoding.EncodeToString(sig)
		b, _ := json.Marshal(body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		r.ContentLength = int64(len(b))
		r.Header.Del("Content-Length")
		return nil
	}
	srv := httptest.NewServer(proxy)
	defer srv.Close()
	km := newKM(t, srv.URL, tokenAuth(v.RootToken))
	ctx := context.Background()
	k, err := km.CreateKey(ctx, "root", keys.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	s, err := km.Signer(ctx, k.Ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.NewRoot(s, ca.RootOptions{TrustDomain: "example.org"}); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("root from a lying Vault: %v", err)
	}
}

func TestRefs(t *testing.T) {
	good := map[string][3]any{
		"vault-transit://transit/root-1":                {"transit", "root-1", 0},
		"vault-transit://ops/ca/transit/root?version=3": {"ops/ca/transit", "root", 3},
	}
	for ref, want := range good {
		m, n, ver, err := ParseRef(ref)
		if err != nil || m != want[0] || n != want[1] || ver != want[2] {
			t.Errorf("ParseRef(%q) = %q %q %d %v", ref, m, n, ver, err)
		}
	}
	for _, bad := range []string{"transit/root", "vault-transit://root", "vault-transit:///root", "vault-transit://transit/", "vault-transit://transit/root?version=0", "vault-transit://transit/root?v=1", "vault-transit://tr ansit/root"} {
		if _, _, _, err := ParseRef(bad); err == nil {
			t.Errorf("ParseRef(%q) succeeded", bad)
		}
	}
	if Ref("transit", "a") != "vault-transit://transit/a" {
		t.Error("Ref")
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cases := map[string]vaultclient.Config{
		"no Vault address given":                 {Auth: tokenAuth("x")},
		"not an http(s) URL":                     {Address: "127.0.0.1:8200", Auth: tokenAuth("x")},
		"token auth needs a token":               {Address: "http://127.0.0.1:1"},
		"AppRole auth needs a role_id":           {Address: "http://127.0.0.1:1", Auth: vaultclient.Auth{Method: "approle"}},
		"Kubernetes auth needs the Vault role":   {Address: "http://127.0.0.1:1", Auth: vaultclient.Auth{Method: "kubernetes"}},
		`auth method "ldap" is not supported`:    {Address: "http://127.0.0.1:1", Auth: vaultclient.Auth{Method: "ldap"}},
		"cannot reach Vault at http://127.0.0.1": {Address: "http://127.0.0.1:1", Auth: tokenAuth("x")},
	}
	for want, o := range cases {
		_, err := New(ctx, Options{Vault: o})
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "vault-transit key manager: ") {
			t.Errorf("%+v: %v, want %q", o, err, want)
		}
	}
}

// BenchmarkSignP256 measures P-256 signatures per second through Transit
// (8 client goroutines), with verification of each signature.
func BenchmarkSignP256(b *testing.B) {
	v := vaultenv.Start(b)
	v.EnableTransit(b, "transit")
	km := newKM(b, v.Addr, tokenAuth(v.RootToken))
	ctx := context.Background()
	k, err := km.CreateKey(ctx, "bench", keys.ECP256)
	if err != nil {
		b.Fatal(err)
	}
	s, err := km.Signer(ctx, k.Ref)
	if err != nil {
		b.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	b.SetParallelism(4)
	b.ResetTimer()
	server, client := v.CPUTime(), vaultenv.SelfCPU()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
	b.ReportMetric(float64((v.CPUTime()-server).Microseconds())/float64(b.N), "vault-cpu-us/op")
	b.ReportMetric(float64((vaultenv.SelfCPU()-client).Microseconds())/float64(b.N), "client-cpu-us/op")
}

// TestCatalog: the backend owns vault-transit://; the mount of a stored
// reference is enough to find its key manager, the Vault connection comes
// from the configuration only.
func TestCatalog(t *testing.T) {
	ctx := context.Background()
	b, ok := keys.Lookup(Scheme)
	if !ok {
		t.Fatal("vault-transit is not registered")
	}
	if uri, err := b.ManagerURI("vault-transit://ops/transit/root?version=2", keys.Config{}); err != nil || uri != "vault-transit://ops/transit" {
		t.Errorf("ManagerURI = %q, %v", uri, err)
	}
	if _, err := keys.Open(ctx, "vault-transit://transit", keys.Config{}); !errors.Is(err, keys.ErrNotConfigured) || !strings.Contains(err.Error(), "configure Vault") {
		t.Errorf("Open without Vault: %v, want keys.ErrNotConfigured", err)
	}
	for _, bad := range []string{"vault-transit:transit", "vault-transit://transit?x=1", "vault-transit://tr ansit"} {
		if _, err := keys.Open(ctx, bad, keys.Config{Vault: vaultclient.Config{Address: "http://127.0.0.1:1", Auth: tokenAuth("x")}}); err == nil || !strings.Contains(err.Error(), "vault-transit key manager") {
			t.Errorf("Open(%s): %v", bad, err)
		}
	}
}
