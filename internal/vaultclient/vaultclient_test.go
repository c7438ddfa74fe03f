package vaultclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/hashicorp/vault/api"

	"github.com/meshroot/meshroot/test/vaultenv"
)

const comp = "test backend"

func lookupSelf(t *testing.T, c *Client) map[string]any {
	t.Helper()
	s, err := c.Read(context.Background(), "look up self", "auth/token/lookup-self")
	if err != nil {
		t.Fatal(err)
	}
	return s.Data
}

// TestKubernetesAuth logs in through Vault's real Kubernetes auth method,
// which asks a TokenReview endpoint (here a stand-in apiserver on
// 127.0.0.1) whether the service-account token is valid.
func TestKubernetesAuth(t *testing.T) {
	v := vaultenv.Start(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{
		"iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:meshroot-system:meshroot",
		"aud": []string{"vault"}, "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(),
		"kubernetes.io": map[string]any{"namespace": "meshroot-system", "serviceaccount": map[string]any{"name": "meshroot", "uid": "5d3a-uid"}},
	}
	saToken, err := jwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	reviews := 0
	apiserver := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" || r.Header.Get("Authorization") != "Bearer reviewer-token" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		var review struct {
			Spec struct {
				Token     string   `json:"token"`
				Audiences []string `json:"audiences"`
			} `json:"spec"`
		}
		_ = json.NewDecoder(r.Body).Decode(&review)
		reviews++
		status := map[string]any{"authenticated": false}
		if review.Spec.Token == saToken {
			status = map[string]any{"authenticated": true, "audiences": review.Spec.Audiences, "user": map[string]any{
				"username": "system:serviceaccount:meshroot-system:meshroot", "uid": "5d3a-uid",
				"groups": []string{"system:serviceaccounts", "system:serviceaccounts:meshroot-system"},
			}}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})
	}))
	defer apiserver.Close()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: apiserver.Certificate().Raw})

	root := v.Client(t)
	if err := root.Sys().EnableAuthWithOptions("kubernetes", &api.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("auth/kubernetes/config", map[string]any{
		"kubernetes_host": apiserver.URL, "kubernetes_ca_cert": string(caPEM),
		"token_reviewer_jwt": "reviewer-token", "disable_local_ca_jwt": true,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("auth/kubernetes/role/meshroot", map[string]any{
		"bound_service_account_names": "meshroot", "bound_service_account_namespaces": "meshroot-system",
		"token_policies": "default", "token_ttl": "1h",
	}); err != nil {
		t.Fatal(err)
	}
	jwtFile := vaultenv.WriteFile(t, "sa-token", saToken)
	c, err := New(context.Background(), comp, Config{Address: v.Addr, Auth: Auth{Method: AuthKubernetes, Role: "meshroot", JWTFile: jwtFile}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := lookupSelf(t, c)
	if meta, _ := data["meta"].(map[string]any); meta["service_account_name"] != "meshroot" {
		t.Errorf("token metadata %v", data["meta"])
	}
	if reviews == 0 {
		t.Error("Vault did not ask the TokenReview endpoint")
	}
	// Another role binding another service account refuses this one.
	if _, err := root.Logical().Write("auth/kubernetes/role/other", map[string]any{
		"bound_service_account_names": "other", "bound_service_account_namespaces": "meshroot-system", "token_policies": "default",
	}); err != nil {
		t.Fatal(err)
	}
	_, err = New(context.Background(), comp, Config{Address: v.Addr, Auth: Auth{Method: AuthKubernetes, Role: "other", JWTFile: jwtFile}})
	if err == nil || !strings.Contains(err.Error(), "test backend: log in to Vault with kubernetes: Vault auth/kubernetes/login") {
		t.Errorf("wrong role: %v", err)
	} else {
		t.Log(err)
	}
	_, err = New(context.Background(), comp, Config{Address: v.Addr, Auth: Auth{Method: AuthKubernetes, Role: "meshroot", JWTFile: filepath.Join(t.TempDir(), "none")}})
	if err == nil || !strings.Contains(err.Error(), "Kubernetes service-account token") {
		t.Errorf("missing JWT file: %v", err)
	}
}

// TestTokenFileIsReadAgain replaces a short, non-renewable token through
// its file, as a Vault Agent sink does.
func TestTokenFileIsReadAgain(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a token to expire")
	}
	t.Parallel()
	v := vaultenv.Start(t)
	first := v.TokenWith(t, vaultenv.TokenOptions{Policies: []string{"default"}, TTL: 3 * time.Second, NotRenewable: true})
	file := vaultenv.WriteFile(t, "token", first)
	c, err := New(context.Background(), comp, Config{Address: v.Addr, Auth: Auth{TokenFile: file}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	second := v.TokenWith(t, vaultenv.TokenOptions{Policies: []string{"default"}, TTL: time.Hour})
	if err := os.WriteFile(file, []byte(second+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second)
	if got := lookupSelf(t, c)["id"]; got != second {
		t.Errorf("token after the first expired: %v, want the file's new token", got)
	}
}

// TestReloginAfterRevocation: AppRole's token is revoked behind the
// client's back; the next request logs in again and succeeds.
func TestReloginAfterRevocation(t *testing.T) {
	v := vaultenv.Start(t)
	roleID, secretID := v.AppRole(t, "r", "default")
	c, err := New(context.Background(), comp, Config{Address: v.Addr, Auth: Auth{Method: AuthAppRole, RoleID: roleID, SecretIDFile: vaultenv.WriteFile(t, "sid", secretID)}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	old := c.API().Token()
	if err := v.Client(t).Auth().Token().RevokeTree(old); err != nil {
		t.Fatal(err)
	}
	lookupSelf(t, c)
	if c.API().Token() == old {
		t.Error("the revoked token is still in use")
	}
	// With a static token there is nothing to log in with: the error says so.
	tok := v.Token(t, "default")
	sc, err := New(context.Background(), comp, Config{Address: v.Addr, Auth: Auth{Token: tok}})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := v.Client(t).Auth().Token().RevokeTree(tok); err != nil {
		t.Fatal(err)
	}
	_, err = sc.Read(context.Background(), "look up self", "auth/token/lookup-self")
	if err == nil || !strings.Contains(err.Error(), "permission denied") || !strings.Contains(err.Error(), "token has expired") {
		t.Errorf("revoked static token: %v", err)
	}
}

// TestTLSAndEnvironment puts a TLS front (which demands a client
// certificate) before Vault and checks the TLS settings, and that VAULT_*
// variables are ignored.
func TestTLSAndEnvironment(t *testing.T) {
	v := vaultenv.Start(t)
	target, _ := url.Parse(v.Addr)
	front := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(target))
	front.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	front.StartTLS()
	defer front.Close()
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: front.Certificate().Raw}), 0o600)
	certFile, keyFile := clientCert(t, dir)

	t.Setenv("VAULT_TOKEN", "from-the-environment")
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1")
	t.Setenv("VAULT_SKIP_VERIFY", "true")
	t.Setenv("VAULT_NAMESPACE", "elsewhere")
	tok := v.Token(t, "default")
	good := TLS{CAFile: caFile, ClientCertFile: certFile, ClientKeyFile: keyFile}
	c, err := New(context.Background(), comp, Config{Address: front.URL, TLS: good, Auth: Auth{Token: tok}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if lookupSelf(t, c)["id"] != tok {
		t.Error("the client does not use the configured token")
	}
	cases := []struct {
		name string
		tls  TLS
		want string
	}{
		{"no CA", TLS{ClientCertFile: certFile, ClientKeyFile: keyFile}, "TLS to " + front.URL + " failed"},
		{"wrong server name", TLS{CAFile: caFile, ServerName: "vault.internal", ClientCertFile: certFile, ClientKeyFile: keyFile}, "TLS to " + front.URL + " failed"},
		{"no client certificate", TLS{CAFile: caFile}, front.URL},
		{"missing CA file", TLS{CAFile: filepath.Join(dir, "nope.pem")}, "Vault TLS settings"},
	}
	for _, tc := range cases {
		_, err := New(context.Background(), comp, Config{Address: front.URL, TLS: tc.tls, Auth: Auth{Token: tok}})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), comp+": ") {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
	ic, err := New(context.Background(), comp, Config{Address: front.URL, TLS: TLS{Insecure: true, ClientCertFile: certFile, ClientKeyFile: keyFile}, Auth: Auth{Token: tok}})
	if err != nil {
		t.Fatalf("insecure: %v", err)
	}
	ic.Close()
}

func clientCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600)
	return certFile, keyFile
}

func TestVaultMessage(t *testing.T) {
	got := vaultMessage([]string{"1 error occurred:\n\t* permission denied\n\n"})
	if got != "permission denied" {
		t.Errorf("vaultMessage = %q", got)
	}
	got = vaultMessage([]string{"2 errors occurred:\n\t* a\n\t* b\n\n", "c"})
	if got != "a; b; c" {
		t.Errorf("vaultMessage = %q", got)
	}
}
