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

// TestAgentWithRootInVaultTransit: the server's root key is a Vault Transit
// key (a real Vault dev server); an agent bootstraps cacerts through it.
func TestAgentWithRootInVaultTransit(t *testing.T) {
	vault := filepath.Join(toolBin(t, "vault"), "vault-v1.21.1", "vault")
	port := freePorts(t, 1)[0]
	addr := "http://127.0.0.1:" + port
	var vlog bytes.Buffer
	v := exec.Command(vault, "server", "-dev", "-dev-root-token-id=root", "-dev-listen-address=127.0.0.1:"+port)
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
	req, _ := http.NewRequest(http.MethodPost, addr+"/v1/sys/mounts/transit", bytes.NewBufferString(`{"type":"transit"}`))
	req.Header.Set("X-Vault-Token", "root")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("enable transit: %v %v", resp, err)
	}
	resp.Body.Close()
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
