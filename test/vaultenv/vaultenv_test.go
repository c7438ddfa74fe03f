package vaultenv

import (
	"net/http"
	"testing"

	"github.com/hashicorp/vault/api"
)

func TestDevServerSealUnseal(t *testing.T) {
	v := Start(t)
	c := v.Client(t)
	v.EnableTransit(t, "transit")
	if _, err := c.Logical().Write("transit/keys/k", map[string]any{"type": "ecdsa-p256"}); err != nil {
		t.Fatal(err)
	}
	v.Seal(t)
	resp, err := http.Get(v.Addr + "/v1/sys/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("sealed health: %s", resp.Status)
	}
	v.Unseal(t)
	if _, err := c.Logical().Read("transit/keys/k"); err != nil {
		t.Errorf("after unseal: %v", err)
	}
	root := v.EnablePKI(t, "pki")
	if !root.IsCA {
		t.Error("PKI root is not a CA")
	}
	tok := v.Token(t, "default")
	if s, err := v.ClientWithToken(t, tok).Auth().Token().LookupSelf(); err != nil || s == nil {
		t.Errorf("token: %v", err)
	}
	roleID, secretID := v.AppRole(t, "r1", "default")
	if s, err := c.Logical().Write("auth/approle/login", map[string]any{"role_id": roleID, "secret_id": secretID}); err != nil || s.Auth == nil {
		t.Errorf("approle login: %v", err)
	}
}

func TestPersistentRestartKeepsData(t *testing.T) {
	v := StartPersistent(t)
	v.EnableTransit(t, "transit")
	c := v.Client(t)
	if _, err := c.Logical().Write("transit/keys/k", map[string]any{"type": "ecdsa-p256"}); err != nil {
		t.Fatal(err)
	}
	addr := v.Addr
	v.Restart(t)
	if v.Addr != addr {
		t.Errorf("address changed from %s to %s", addr, v.Addr)
	}
	if s, err := c.Logical().Read("transit/keys/k"); err != nil || s == nil {
		t.Errorf("key after restart: %v %v", s, err)
	}
	v.Seal(t)
	v.Unseal(t)
}

// TestDevServerKubernetesAuthPlugin: the minimal build has no Kubernetes
// auth method of its own; a dev server registers the one built beside it
// (plugins/kubernetes) at start, so that `auth enable kubernetes` works as
// on a full build, and the catalog shows it is the external plugin.
func TestDevServerKubernetesAuthPlugin(t *testing.T) {
	v := Start(t)
	c := v.Client(t)
	if v.pluginDir() == "" {
		t.Skipf("no plugins folder beside %s (MESHROOT_VAULT_BIN names a full build?)", v.bin)
	}
	if err := c.Sys().EnableAuthWithOptions("kubernetes", &api.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatalf("enable kubernetes auth: %v\n%s", err, v.logTail(20))
	}
	if _, err := c.Logical().Write("auth/kubernetes/config", map[string]any{"kubernetes_host": "https://127.0.0.1:1", "disable_local_ca_jwt": true}); err != nil {
		t.Fatalf("the plugin does not serve its config path: %v", err)
	}
	p, err := c.Sys().GetPluginWithContext(t.Context(), &api.GetPluginInput{Name: "kubernetes", Type: api.PluginTypeCredential})
	if err != nil {
		t.Fatal(err)
	}
	if p.Builtin {
		t.Errorf("catalog entry for kubernetes is builtin: the server is not the minimal build")
	}
	if p.SHA256 == "" {
		t.Errorf("catalog entry for kubernetes has no sha256: %+v", p)
	}
}
