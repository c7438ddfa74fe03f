package keys

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLeanImporters: package keys carries no backend and no Vault client,
// so the in-cluster agent, which imports keys for key types, stays free of
// HSM, KMS and Vault code. Only the CLI and server import backends.
func TestLeanImporters(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to list imports")
	}
	for _, pkg := range []string{"github.com/meshroot/meshroot/keys", "github.com/meshroot/meshroot/agent"} {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, banned := range []string{"/keys/disk", "/keys/pkcs11", "/keys/kms", "/keys/vaulttransit", "/internal/vaultclient", "github.com/hashicorp/vault", "go.step.sm/crypto/kms", "github.com/ThalesGroup/crypto11"} {
				if strings.Contains(dep, banned) {
					t.Errorf("%s imports %s", pkg, dep)
				}
			}
		}
	}
}
