package kube

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshroot/meshroot/test/kube/kubeenv"
)

const softHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

// toolBin runs test/tools/build.sh for tool and returns its bin folder.
func toolBin(t *testing.T, tool string) string {
	t.Helper()
	out, err := exec.Command("../tools/build.sh", tool).Output()
	if err != nil {
		t.Fatalf("test/tools/build.sh %s: %v", tool, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// agentThrough registers cluster, runs `agent --once` with a join token
// and checks the Secret: the root key's backend must not matter to it.
func agentThrough(t *testing.T, c *kubeenv.Cluster, s *server, cluster string) *cacerts {
	t.Helper()
	c.EnsureNamespace(t, meshNS)
	s.cli("cluster", "add", cluster)
	s.mustAgentOnce(t, cluster, c.KubeconfigPath, []string{"MESHROOT_JOIN_TOKEN=" + s.joinToken(cluster)})
	cc := mustCACerts(t, c)
	if !sameCerts(cc.roots, s.bundle()) || cc.cert.Subject.CommonName != cluster {
		t.Fatalf("%s: cacerts not under the server's root", cluster)
	}
	return cc
}

// TestAgentWithRootInSoftHSM2: the server's root key is made and kept in a
// SoftHSM2 token; an agent bootstraps cacerts through it.
func TestAgentWithRootInSoftHSM2(t *testing.T) {
	if _, err := os.Stat(softHSMModule); err != nil {
		t.Fatalf("SoftHSM2 is missing (make test installs it): %v", err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.MkdirAll(filepath.Join(dir, "tokens"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+filepath.Join(dir, "tokens")+"\nobjectstore.backend = file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf) // inherited by the server process
	if out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "meshroot", "--pin", "1234", "--so-pin", "5678").CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util: %v\n%s", err, out)
	}
	pin := writeFile(t, dir, "pin", []byte("1234"))
	c := kubeenv.Start(t, "hsm")
	s := startServer(t, fmt.Sprintf("keys:\n  create: \"pkcs11:module-path=%s;token=meshroot?pin-source=%s\"\n", softHSMModule, pin))
	var roots []struct {
		KeyRef string `json:"key_ref"`
	}
	if err := json.Unmarshal([]byte(s.cli("root", "list", "-o", "json")), &roots); err != nil || len(roots) != 1 || !strings.HasPrefix(roots[0].KeyRef, "pkcs11:") {
		t.Fatalf("root list: %+v %v", roots, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(s.dataDir, "keys")); len(entries) != 0 {
		t.Errorf("the data dir holds key files although the root key is in the HSM: %d", len(entries))
	}
	agentThrough(t, c, s, "hsm")
}

// startVault runs a real Vault dev server (root token "root") with the
// transit engine enabled and returns its address.
func startVault(t *testing.T) string {
	t.Helper()
	// Vault's minimal build, with the Kubernetes auth method as the
	// external plugin beside it (test/tools/build.sh), which a dev server
	// registers at start from -dev-plugin-dir.
	dir := filepath.Join(toolBin(t, "vault"), "vault-v1.21.1-minimal")
	port := freePorts(t, 1)[0]
	addr := "http://127.0.0.1:" + port
	var vlog bytes.Buffer
	v := exec.Command(filepath.Join(dir, "vault"), "server", "-dev", "-dev-root-token-id=root", "-dev-listen-address=127.0.0.1:"+port,
		"-dev-plugin-dir="+filepath.Join(dir, "plugins"))
	v.Stdout, v.Stderr = &vlog, &vlog
	if err := v.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = v.Process.Kill()
		_ = v.Wait()
		if t.Failed() {
			t.Logf("vault log:\n%s", vlog.String())
		}
	})
	eventually(t, 30*time.Second, "vault healthy", func() error { return httpOK(addr + "/v1/sys/health") })
	vaultAPI(t, addr, http.MethodPost, "/v1/sys/mounts/transit", `{"type":"transit"}`)
	return addr
}

// vaultAPI calls Vault's HTTP API with the root token and requires success.
func vaultAPI(t *testing.T, addr, method, path, body string) {
	t.Helper()
	req, _ := http.NewRequest(method, addr+path, bytes.NewBufferString(body))
	req.Header.Set("X-Vault-Token", "root")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("vault %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		t.Fatalf("vault %s %s: %s %s", method, path, resp.Status, b.String())
	}
}

// TestAgentWithRootInVaultTransit: the server's root key is a Vault Transit
// key (a real Vault dev server); an agent bootstraps cacerts through it.
func TestAgentWithRootInVaultTransit(t *testing.T) {
	addr := startVault(t)
	dir := t.TempDir()
	token := writeFile(t, dir, "token", []byte("root"))
	c := kubeenv.Start(t, "transit")
	s := startServer(t, fmt.Sprintf("keys:\n  create: vault-transit://transit\n  vault:\n    address: %s\n    tokenFile: %s\n", addr, token))
	var roots []struct {
		KeyRef string `json:"key_ref"`
	}
	if err := json.Unmarshal([]byte(s.cli("root", "list", "-o", "json")), &roots); err != nil || len(roots) != 1 || !strings.HasPrefix(roots[0].KeyRef, "vault-transit://transit/") {
		t.Fatalf("root list: %+v %v", roots, err)
	}
	agentThrough(t, c, s, "transit")
}

// TestVaultKubernetesAuth: meshroot logs in to a real Vault with its own
// Kubernetes service-account token, which Vault checks by TokenReview
// against a real kube-apiserver; the Transit root key then signs.
func TestVaultKubernetesAuth(t *testing.T) {
	c := kubeenv.Start(t, "vaultauth")
	addr := startVault(t)
	ctx := t.Context()
	// Vault's reviewer account may call TokenReview.
	c.EnsureServiceAccount(t, "vault", "reviewer")
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "vault-reviewer"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "reviewer", Namespace: "vault"}},
	}
	if _, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	reviewer := c.ServiceAccountToken(t, "vault", "reviewer", c.Issuer, time.Hour)
	cfg, _ := json.Marshal(map[string]any{
		"kubernetes_host": c.Config.Host, "kubernetes_ca_cert": string(c.CAPEM),
		"token_reviewer_jwt": reviewer, "disable_local_ca_jwt": true,
	})
	vaultAPI(t, addr, http.MethodPost, "/v1/sys/auth/kubernetes", `{"type":"kubernetes"}`)
	vaultAPI(t, addr, http.MethodPost, "/v1/auth/kubernetes/config", string(cfg))
	vaultAPI(t, addr, http.MethodPut, "/v1/sys/policies/acl/meshroot", `{"policy":"path \"transit/keys/*\" { capabilities = [\"create\", \"read\", \"update\", \"list\"] }\npath \"transit/sign/*\" { capabilities = [\"update\"] }"}`)
	vaultAPI(t, addr, http.MethodPost, "/v1/auth/kubernetes/role/meshroot",
		`{"bound_service_account_names":["meshroot"],"bound_service_account_namespaces":["meshroot"],"policies":["meshroot"],"audience":"vault","ttl":"1h"}`)

	jwt := writeFile(t, t.TempDir(), "jwt", []byte(c.ServiceAccountToken(t, "meshroot", "meshroot", "vault", time.Hour)))
	s := startServer(t, fmt.Sprintf("keys:\n  create: vault-transit://transit\n  vault:\n    address: %s\n    authMethod: kubernetes\n    role: meshroot\n    jwtFile: %s\n", addr, jwt))
	var roots []struct {
		KeyRef string `json:"key_ref"`
	}
	if err := json.Unmarshal([]byte(s.cli("root", "list", "-o", "json")), &roots); err != nil || len(roots) != 1 || !strings.HasPrefix(roots[0].KeyRef, "vault-transit://transit/") {
		t.Fatalf("root list: %+v %v", roots, err)
	}
	agentThrough(t, c, s, "vaultauth")

	// A token of another service account is refused by Vault's role.
	other := writeFile(t, t.TempDir(), "jwt", []byte(c.ServiceAccountToken(t, "meshroot", "intruder", "vault", time.Hour)))
	r := run(t, 30*time.Second, nil, "--data-dir", filepath.Join(t.TempDir(), "d"), "--key", "vault-transit://transit",
		"--vault-addr", addr, "--vault-auth", "kubernetes", "--vault-role", "meshroot", "--vault-jwt-file", other,
		"root", "init", "--trust-domain", "example.org")
	if r.code == 0 || !strings.Contains(strings.ToLower(r.stderr), "vault") {
		t.Errorf("root init with an unbound service account's token: %s", r)
	}
}
